# Expected output (nomad alloc logs):
#   hello, nomad
#   argv: hello_wasi.wasm /etc/hostname
# Expected stderr (nomad alloc logs -stderr):
#   hello_wasi: this line goes to stderr
#   cannot open /etc/hostname: Capabilities insufficient
# The task exits with code 3 because no preopen grants /etc, so Nomad reports
# it as failed; that is the point of the example.
job "hello_wasi" {
  datacenters = ["dc1"]
  type        = "batch"

  group "hello_wasi" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    task "hello_wasi" {
      driver = "wasmtime"

      env {
        HELLO_NAME = "nomad"
      }

      config {
        modulePath = "example/wasm-modules/hello_wasi.wasm"
        wasi {
          args = ["/etc/hostname"]
        }
      }
    }
  }
}
