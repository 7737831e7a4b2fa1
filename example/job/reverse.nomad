# Expected output (nomad alloc logs): !dlrow ,olleH
# The module reverses the IO buffer's input; the output has no trailing newline.
job "reverse" {
  datacenters = ["dc1"]
  type        = "batch"

  group "reverse" {
    task "reverse" {
      driver = "wasmtime"

      config {
        modulePath = "example/wasm-modules/reverse.wasm"
        ioBuffer {
          enabled    = true
          inputValue = "Hello, world!"
        }
      }
    }
  }
}
