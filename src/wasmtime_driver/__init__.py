"""A HashiCorp Nomad task driver plugin that runs WebAssembly modules on Wasmtime."""

__version__ = "0.1.0"
