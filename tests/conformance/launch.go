package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"wasmtime-driver/gen/base"
	"wasmtime-driver/gen/drivers"
)

// Handshake values of Nomad 1.6 to 1.9 (plugins/base): application protocol
// version 2 and Nomad's magic cookie.
var nomadHandshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

// basePlugin and driverPlugin are the client halves of the "base" and
// "driver" entries of Nomad's plugin set; each returns our generated stub.
type basePlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (basePlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return fmt.Errorf("the conformance client never serves plugins")
}

func (basePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return base.NewBasePluginClient(conn), nil
}

type driverPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (driverPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return fmt.Errorf("the conformance client never serves plugins")
}

func (driverPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return drivers.NewDriverClient(conn), nil
}

// launched is one plugin process started the way Nomad's plugin loader does.
type launched struct {
	client *plugin.Client
	cmd    *exec.Cmd
	rpc    plugin.ClientProtocol
	base   base.BasePluginClient
	driver drivers.DriverClient
}

// launchPlugin starts the plugin executable in workDir, performs the
// handshake and dispenses both plugin types.
func launchPlugin(path, workDir string, logger hclog.Logger) (*launched, error) {
	cmd := exec.Command(path)
	cmd.Dir = workDir
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: nomadHandshake,
		Plugins: map[string]plugin.Plugin{
			"base":   basePlugin{},
			"driver": driverPlugin{},
		},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("go-plugin handshake with %s failed: %w", path, err)
	}
	result := &launched{client: client, cmd: cmd, rpc: rpcClient}
	rawBase, err := rpcClient.Dispense("base")
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("dispense base failed: %w", err)
	}
	result.base = rawBase.(base.BasePluginClient)
	rawDriver, err := rpcClient.Dispense("driver")
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("dispense driver failed: %w", err)
	}
	result.driver = rawDriver.(drivers.DriverClient)
	return result, nil
}

func newLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "conformance",
		Level:  hclog.Debug,
		Output: os.Stderr,
	})
}
