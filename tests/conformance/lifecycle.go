package main

import (
	"context"
	"errors"
	"os"
	"regexp"
	"sync"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2/hcldec"
	"google.golang.org/protobuf/encoding/protojson"

	"wasmtime-driver/gen/base"
	"wasmtime-driver/gen/drivers"
	"wasmtime-driver/gen/hclspec"
)

// firstFingerprintTimeout bounds the wait for the first Fingerprint message
// so a silent plugin fails the run instead of hanging it; Nomad's client
// waits up to 55 s.
const firstFingerprintTimeout = 30 * time.Second

// semverPattern is the shape hashicorp/go-version accepts for a plugin
// version, without the leading "v" Nomad does not need.
var semverPattern = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// killAndCheck ends the plugin with go-plugin's Kill and checks that the
// process exited by itself. go-plugin 1.0.1 calls GRPCController.Shutdown and
// waits up to 2 s for the exit before it sends SIGKILL. So an exit that no
// signal caused means the graceful path worked.
func killAndCheck(s *scenario, prefix string, p *launched) {
	pid := p.cmd.Process.Pid
	socket := ""
	if reattach := p.client.ReattachConfig(); reattach != nil && reattach.Addr != nil {
		if reattach.Addr.Network() == "unix" {
			socket = reattach.Addr.String()
		}
	}
	started := time.Now()
	p.client.Kill()
	s.Data[prefix+"kill_seconds"] = time.Since(started).Seconds()

	state := p.cmd.ProcessState
	if !s.check(prefix+"process_reaped", state != nil, "pid %d", pid) {
		return
	}
	status := state.Sys().(syscall.WaitStatus)
	s.check(prefix+"exit_not_by_signal", !status.Signaled(),
		"wait status %v: a signal here means go-plugin had to SIGKILL the plugin after Shutdown", state)
	s.check(prefix+"exit_code_zero", status.Exited() && status.ExitStatus() == 0, "wait status %v", state)
	err := syscall.Kill(pid, 0)
	s.check(prefix+"process_gone", errors.Is(err, syscall.ESRCH), "kill(%d, 0) returned %v", pid, err)
	if socket != "" {
		_, statErr := os.Stat(socket)
		s.check(prefix+"socket_removed", errors.Is(statErr, os.ErrNotExist),
			"stat %s after exit returned %v", socket, statErr)
	}
}

func runHandshakeAndKill(in *input, logger hclog.Logger, s *scenario) {
	p, err := launchPlugin(in.Plugin, in.PluginWorkDir, logger)
	if err != nil {
		s.abort(err)
		return
	}
	s.check("protocol_grpc", p.client.Protocol() == plugin.ProtocolGRPC, "protocol %q", p.client.Protocol())
	if reattach := p.client.ReattachConfig(); reattach != nil && reattach.Addr != nil {
		s.Data["network"] = reattach.Addr.Network()
		s.Data["address"] = reattach.Addr.String()
	}
	pingErr := p.rpc.Ping()
	s.check("ping", pingErr == nil, "go-plugin Ping (grpc.health.v1 Check of service \"plugin\") returned %v", pingErr)
	killAndCheck(s, "", p)
}

func checkPluginInfo(s *scenario, info *base.PluginInfoResponse) {
	s.check("plugin_type_driver", info.Type == base.PluginType_DRIVER, "type %v", info.Type)
	versions := info.PluginApiVersions
	s.check("plugin_api_versions", len(versions) == 1 && versions[0] == "v0.1.0", "plugin_api_versions %q", versions)
	s.check("plugin_version_semver", semverPattern.MatchString(info.PluginVersion), "plugin_version %q", info.PluginVersion)
	s.check("plugin_name", info.Name == "wasmtime", "name %q", info.Name)
	s.Data["plugin_info"] = map[string]interface{}{
		"name": info.Name, "version": info.PluginVersion, "api_versions": versions,
	}
}

// convertSchema records the protobuf schema as protojson and converts it.
func convertSchema(s *scenario, result *report, name string, spec *hclspec.Spec) hcldec.Spec {
	if !s.check(name+"_schema_set", spec != nil, "%s schema spec present", name) {
		return nil
	}
	text, err := protojson.Marshal(spec)
	if err == nil {
		result.Schemas[name] = string(text)
	}
	_, isObject := spec.Block.(*hclspec.Spec_Object)
	s.check(name+"_schema_root_object", isObject, "root spec %T", spec.Block)
	converted, err := convertSpec(spec, "")
	if !s.check(name+"_schema_converts", err == nil, "hclspec to hcldec conversion: %v", err) {
		return nil
	}
	return converted
}

// session is the long-lived plugin instance with its open streams.
type session struct {
	plugin     *launched
	taskSpec   hcldec.Spec
	pluginSpec hcldec.Spec
	cancel     context.CancelFunc
	streams    sync.WaitGroup

	mu                 sync.Mutex
	fingerprints       int
	fingerprintEnd     error
	events             []*drivers.DriverTaskEvent
	eventsEnd          error
	firstFingerprint   chan *drivers.FingerprintResponse
	firstFingerprintAt time.Time
}

func (ss *session) watchFingerprints(stream drivers.Driver_FingerprintClient) {
	defer ss.streams.Done()
	for {
		message, err := stream.Recv()
		if err != nil {
			ss.mu.Lock()
			ss.fingerprintEnd = err
			ss.mu.Unlock()
			return
		}
		ss.mu.Lock()
		ss.fingerprints++
		first := ss.fingerprints == 1
		ss.mu.Unlock()
		if first {
			ss.firstFingerprint <- message
		}
	}
}

func (ss *session) watchEvents(stream drivers.Driver_TaskEventsClient) {
	defer ss.streams.Done()
	for {
		event, err := stream.Recv()
		ss.mu.Lock()
		if err != nil {
			ss.eventsEnd = err
			ss.mu.Unlock()
			return
		}
		ss.events = append(ss.events, event)
		ss.mu.Unlock()
	}
}

// close checks that both streams stayed open for the whole run, then kills
// the plugin gracefully.
func (ss *session) close(s *scenario) {
	ss.mu.Lock()
	fingerprintEnd, eventsEnd := ss.fingerprintEnd, ss.eventsEnd
	s.Data["fingerprints_received"] = ss.fingerprints
	s.Data["task_events_received"] = len(ss.events)
	ss.mu.Unlock()
	s.check("fingerprint_stream_stayed_open", fingerprintEnd == nil, "stream ended with %v", fingerprintEnd)
	s.check("task_events_stream_stayed_open", eventsEnd == nil, "stream ended with %v", eventsEnd)
	ss.cancel()
	ss.streams.Wait()
	killAndCheck(s, "long_lived_", ss.plugin)
}

func setConfig(p *launched, encoded []byte, withNomadConfig bool) error {
	request := &base.SetConfigRequest{MsgpackConfig: encoded, PluginApiVersion: "v0.1.0"}
	if withNomadConfig {
		// Nomad's defaults for client_min_port / client_max_port.
		request.NomadConfig = &base.NomadConfig{
			Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512},
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.base.SetConfig(ctx, request)
	return err
}

func runLaunchSequence(in *input, logger hclog.Logger, s *scenario, result *report) *session {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Launch 1: the catalog probe.
	probe, err := launchPlugin(in.Plugin, in.PluginWorkDir, logger)
	if err != nil {
		s.abort(err)
		return nil
	}
	info, err := probe.base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if !s.check("probe_plugin_info", err == nil, "PluginInfo returned %v", err) {
		killAndCheck(s, "probe_", probe)
		return nil
	}
	checkPluginInfo(s, info)
	schema, err := probe.base.ConfigSchema(ctx, &base.ConfigSchemaRequest{})
	var pluginSpec hcldec.Spec
	if s.check("probe_config_schema", err == nil, "ConfigSchema returned %v", err) {
		pluginSpec = convertSchema(s, result, "plugin", schema.Spec)
	}
	killAndCheck(s, "probe_", probe)
	if pluginSpec == nil {
		return nil
	}
	encoded, _, err := encodeConfig(pluginSpec, []byte(in.PluginConfig))
	if !s.check("plugin_config_encodes", err == nil, "plugin config %s: %v", in.PluginConfig, err) {
		return nil
	}

	// Launch 2: the validation instance, SetConfig without nomad_config.
	validation, err := launchPlugin(in.Plugin, in.PluginWorkDir, logger)
	if err != nil {
		s.abort(err)
		return nil
	}
	err = setConfig(validation, encoded, false)
	s.check("validation_set_config", err == nil, "SetConfig without nomad_config returned %v", err)
	killAndCheck(s, "validation_", validation)

	// Launch 3: the long-lived instance.
	return startLongLived(in, logger, s, result, encoded, pluginSpec)
}

func startLongLived(in *input, logger hclog.Logger, s *scenario, result *report, encoded []byte, pluginSpec hcldec.Spec) *session {
	p, err := launchPlugin(in.Plugin, in.PluginWorkDir, logger)
	if err != nil {
		s.abort(err)
		return nil
	}
	err = setConfig(p, encoded, true)
	if !s.check("long_lived_set_config", err == nil, "SetConfig with nomad_config returned %v", err) {
		killAndCheck(s, "long_lived_", p)
		return nil
	}
	streamCtx, cancelStreams := context.WithCancel(context.Background())
	ss := &session{
		plugin:           p,
		pluginSpec:       pluginSpec,
		cancel:           cancelStreams,
		firstFingerprint: make(chan *drivers.FingerprintResponse, 1),
	}
	opened := time.Now()
	fingerprints, err := p.driver.Fingerprint(streamCtx, &drivers.FingerprintRequest{})
	s.check("fingerprint_stream_opens", err == nil, "Fingerprint returned %v", err)
	events, eventsErr := p.driver.TaskEvents(streamCtx, &drivers.TaskEventsRequest{})
	s.check("task_events_stream_opens", eventsErr == nil, "TaskEvents returned %v", eventsErr)
	if err == nil {
		ss.streams.Add(1)
		go ss.watchFingerprints(fingerprints)
	}
	if eventsErr == nil {
		ss.streams.Add(1)
		go ss.watchEvents(events)
	}
	if err == nil {
		checkFirstFingerprint(s, ss, opened)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	taskSchema, err := p.driver.TaskConfigSchema(ctx, &drivers.TaskConfigSchemaRequest{})
	if s.check("task_config_schema", err == nil, "TaskConfigSchema returned %v", err) {
		ss.taskSpec = convertSchema(s, result, "task", taskSchema.Spec)
	}
	capabilities, err := p.driver.Capabilities(ctx, &drivers.CapabilitiesRequest{})
	if s.check("capabilities", err == nil, "Capabilities returned %v", err) {
		caps := capabilities.Capabilities
		if s.check("capabilities_set", caps != nil, "CapabilitiesResponse.capabilities present") {
			text, _ := protojson.Marshal(caps)
			s.Data["capabilities"] = string(text)
		}
	}
	if ss.taskSpec == nil {
		ss.close(s)
		return nil
	}
	return ss
}

func checkFirstFingerprint(s *scenario, ss *session, opened time.Time) {
	select {
	case first := <-ss.firstFingerprint:
		s.Data["first_fingerprint_seconds"] = time.Since(opened).Seconds()
		s.check("fingerprint_healthy", first.Health == drivers.FingerprintResponse_HEALTHY,
			"health %v (%q)", first.Health, first.HealthDescription)
		version, ok := first.Attributes["driver.wasmtime.version"]
		s.check("fingerprint_version_attribute", ok && version.GetStringVal() != "",
			"attribute driver.wasmtime.version = %v", version)
		names := []string{}
		for name := range first.Attributes {
			names = append(names, name)
		}
		s.Data["fingerprint_attributes"] = names
	case <-time.After(firstFingerprintTimeout):
		s.check("fingerprint_first_message", false, "no Fingerprint message within %s", firstFingerprintTimeout)
	}
}
