"""Generated protobuf and gRPC code for the Nomad plugin protocol.

Every module here except this one is written by scripts/generate_protos.py from
the `.proto` files under proto/. Edit those and regenerate instead of editing
the modules.
"""
