#!/bin/sh
# Build the Go conformance client against Debian's packaged go-plugin, grpc,
# go-cty and hcl (GOPATH mode, offline), with Go stubs generated from the
# repository's .proto files, then run it.
#
# usage: run.sh BUILD_DIR [-input INPUT.json -output REPORT.json]
#   BUILD_DIR  a scratch directory for the generated GOPATH and the binary
#   with no further arguments the client is only built.
#
# Needs the Debian packages golang-go, golang-github-hashicorp-go-plugin-dev,
# golang-google-grpc-dev, golang-google-protobuf-dev,
# golang-github-zclconf-go-cty-dev, golang-github-hashicorp-hcl-v2-dev,
# protoc-gen-go, protoc-gen-go-grpc and protobuf-compiler.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [-input INPUT.json -output REPORT.json]" >&2
    exit 2
fi
build_dir=$1
shift

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
proto_dir=$repo/proto
gopath=$build_dir/gopath
system_gopath=/usr/share/gocode

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "missing $tool: apt-get install golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc" >&2
        exit 3
    fi
done
if [ ! -d "$system_gopath/src/github.com/hashicorp/go-plugin" ]; then
    echo "missing $system_gopath/src/github.com/hashicorp/go-plugin: apt-get install golang-github-hashicorp-go-plugin-dev" >&2
    exit 3
fi

rm -rf "$gopath"
mkdir -p "$gopath/src/wasmtime-driver/conformance"

# The go-plugin internal protos (package "plugin") are left out on purpose:
# go-plugin registers its own copies, and a second registration of the same
# file and message names makes the protobuf runtime panic at start.
protoc \
    -I "$proto_dir" -I /usr/include \
    --go_out="$gopath/src" \
    --go-grpc_out="$gopath/src" \
    "$proto_dir/hashicorp/nomad/plugins/base/proto/base.proto" \
    "$proto_dir/hashicorp/nomad/plugins/drivers/proto/driver.proto" \
    "$proto_dir/hashicorp/nomad/plugins/shared/hclspec/hcl_spec.proto" \
    "$proto_dir"/hashicorp/nomad/plugins/shared/structs/proto/*.proto

cp "$here"/*.go "$gopath/src/wasmtime-driver/conformance/"

export GO111MODULE=off
export GOPATH="$gopath:$system_gopath"
export GOFLAGS=
export CGO_ENABLED=0
# Go's default build cache (under $HOME) makes rebuilds fast; without a
# HOME the cache goes into the build directory.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then
    export GOCACHE="$build_dir/gocache"
fi
go build -o "$build_dir/conformance" wasmtime-driver/conformance

if [ $# -gt 0 ]; then
    exec "$build_dir/conformance" "$@"
fi
