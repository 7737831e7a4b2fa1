# Expected output (nomad alloc logs): {"output":"HELLO FROM NOMAD"}
# IO buffer output is written as raw bytes, so it has no trailing newline.
job "json_upper" {
  datacenters = ["dc1"]
  type        = "batch"

  group "json_upper" {
    task "json_upper" {
      driver = "wasmtime"

      config {
        modulePath = "example/wasm-modules/json_upper.wasm"
        ioBuffer {
          enabled       = true
          size          = 1024
          inputValue    = "{\"line\": \"hello from nomad\"}"
          IOBufFuncName = "get_io_buffer_ptr"
        }
        main {
          mainFuncName = "handle_buffer"
        }
      }
    }
  }
}
