# Expected output (nomad alloc logs): 0.30000000000000004
# scale(i64, f64) multiplies 3 by 0.1 in f64 arithmetic. Try
# mainFuncName = "divmod" with args = [17, 5] for two results: 3 2
job "typed" {
  datacenters = ["dc1"]
  type        = "batch"

  group "typed" {
    task "typed" {
      driver = "wasmtime"

      config {
        modulePath = "example/wasm-modules/typed.wasm"
        main {
          mainFuncName = "scale"
          args = [3, 0.1]
        }
      }
    }
  }
}
