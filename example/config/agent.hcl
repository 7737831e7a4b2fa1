# Nomad client agent configuration for the wasmtime driver.
#
# With a real Nomad agent (the plugin executable `wasmtime-driver` in build/):
#
#   nomad agent -dev -config=example/config/agent.hcl -plugin-dir=$(pwd)/build
#
# Without one, the driver's own stand-in for a Nomad client reads the same file:
#
#   wasmtime-driver run example/job/sum.nomad --config example/config/agent.hcl
#
# The block label is the plugin's file name in plugin_dir, not the driver name
# that jobs use (driver = "wasmtime"). Nomad 1.10 and later only load plugins
# that have such a block.
plugin "wasmtime-driver" {
  config {
    cache {
      enabled = true
      # One of "lfu", "lru", "arc" or "simple".
      type = "lru"
      # Maximum number of compiled modules kept.
      size = 10

      expiration {
        enabled = true
        # Seconds after which a cached module is dropped.
        entryTTL = 10
      }

      # Compile every *.wasm file under modulesDir when the plugin starts.
      preCache {
        enabled    = false
        modulesDir = "example/wasm-modules"
      }
    }
  }
}
