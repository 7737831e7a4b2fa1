// Command conformance drives the wasmtime-driver plugin with HashiCorp's
// go-plugin client and encodes configs with go-cty and hcl, the libraries a
// Nomad client is built from. It reads an input JSON file (see input) and
// writes a report JSON file (see report). Every assertion is a check in the
// report, and the process exits 1 when any check failed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
)

// jobInput is one task to run through StartTask. Config is the config map as
// JSON text, kept as text so that numbers keep their exact decimal form.
type jobInput struct {
	Name   string            `json:"name"`
	Task   string            `json:"task"`
	Config string            `json:"config"`
	Env    map[string]string `json:"env"`
}

// ctyInput is one config map to encode against the plugin's schema, named
// by "task" (TaskConfigSchema) or "plugin" (ConfigSchema).
type ctyInput struct {
	Name   string `json:"name"`
	Schema string `json:"schema"`
	Config string `json:"config"`
}

type input struct {
	Plugin        string     `json:"plugin"`
	PluginWorkDir string     `json:"plugin_workdir"`
	ScratchDir    string     `json:"scratch_dir"`
	PluginConfig  string     `json:"plugin_config"`
	Jobs          []jobInput `json:"jobs"`
	Spin          jobInput   `json:"spin"`
	Recoverable   jobInput   `json:"recoverable"`
	Invalid       jobInput   `json:"invalid"`
	CtyCases      []ctyInput `json:"cty_cases"`
}

func main() {
	inputPath := flag.String("input", "", "path of the input JSON file")
	outputPath := flag.String("output", "", "path of the report JSON file to write")
	flag.Parse()
	if *inputPath == "" || *outputPath == "" {
		fmt.Fprintln(os.Stderr, "usage: conformance -input INPUT.json -output REPORT.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(*inputPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to read input: %v\n", err)
		os.Exit(2)
	}
	var in input
	if err := json.Unmarshal(data, &in); err != nil {
		fmt.Fprintf(os.Stderr, "invalid input JSON %s: %v\n", *inputPath, err)
		os.Exit(2)
	}
	if len(in.PluginConfig) == 0 {
		in.PluginConfig = "{}"
	}

	result := &report{
		GoVersion: runtime.Version(),
		Scenarios: []*scenario{},
		Schemas:   map[string]string{},
		Cty:       []ctyResult{},
		Jobs:      []jobResult{},
	}
	runAll(&in, result)
	if err := writeReport(*outputPath, result); err != nil {
		fmt.Fprintf(os.Stderr, "failed to write report: %v\n", err)
		os.Exit(2)
	}
	for _, s := range result.Scenarios {
		for _, c := range s.Checks {
			if !c.OK {
				os.Exit(1)
			}
		}
	}
}

func runAll(in *input, result *report) {
	logger := newLogger()

	handshake := newScenario("handshake_and_kill")
	result.Scenarios = append(result.Scenarios, handshake)
	runHandshakeAndKill(in, logger, handshake)

	sequence := newScenario("nomad_launch_sequence")
	result.Scenarios = append(result.Scenarios, sequence)
	session := runLaunchSequence(in, logger, sequence, result)
	if session == nil {
		return
	}
	defer session.close(sequence)

	cty := newScenario("cty_encoding")
	result.Scenarios = append(result.Scenarios, cty)
	runCtyCases(in, session, cty, result)

	jobs := newScenario("example_jobs")
	result.Scenarios = append(result.Scenarios, jobs)
	runJobs(in, session, jobs, result)

	stop := newScenario("stop_spinning_task")
	result.Scenarios = append(result.Scenarios, stop)
	runStopSpinning(in, session, stop)

	failures := newScenario("start_failures")
	result.Scenarios = append(result.Scenarios, failures)
	runStartFailures(in, session, failures)
}
