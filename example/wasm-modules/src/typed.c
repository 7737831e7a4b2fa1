/* Functions with i64, f32 and f64 parameters and results, and one with two
 * results (built with the multivalue ABI). */

__attribute__((export_name("scale"))) double scale(long long count,
                                                   double factor) {
  return (double)count * factor;
}

__attribute__((export_name("half"))) float half(float value) {
  return value / 2.0f;
}

__attribute__((export_name("negate"))) long long negate(long long value) {
  return -value;
}

typedef struct {
  long long quotient;
  long long remainder;
} divmod_result;

/* Traps with "integer divide by zero" when divisor is 0. */
__attribute__((export_name("divmod"))) divmod_result divmod(long long dividend,
                                                            long long divisor) {
  divmod_result result = {dividend / divisor, dividend % divisor};
  return result;
}
