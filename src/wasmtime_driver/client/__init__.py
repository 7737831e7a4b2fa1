"""A stand-in for the Nomad client agent, driving the plugin on one machine.

`wasmtime-driver run JOB.nomad` starts the plugin the way a Nomad 1.6 to 1.9
client does. It performs the go-plugin handshake, makes the same RPCs in the
same order and encodes configs the same way. Tasks get an allocation
directory with Nomad's layout, and their log FIFOs are read the way Nomad's
log collector (logmon) reads them.
"""
