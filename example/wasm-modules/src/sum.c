/* sum(a, b) returns a + b; built with -fwrapv, so 2147483647 + 1 wraps to
 * -2147483648 exactly as the wasm i32.add instruction does. */

__attribute__((export_name("sum"))) int sum(int a, int b) { return a + b; }
