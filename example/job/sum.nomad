# Expected output (nomad alloc logs): 802366
job "sum" {
  datacenters = ["dc1"]
  type        = "batch"

  group "sum" {
    task "sum" {
      driver = "wasmtime"

      config {
        modulePath = "example/wasm-modules/sum.wasm"
        main {
          mainFuncName = "sum"
          args = [123456, 678910]
        }
      }
    }
  }
}
