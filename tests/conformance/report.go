package main

import (
	"encoding/json"
	"fmt"
	"os"
)

// check is one asserted condition of a scenario.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// scenario collects the checks and observations of one scenario. A scenario
// that stops early records the reason as a failed check named "aborted".
type scenario struct {
	Name   string                 `json:"name"`
	Checks []check                `json:"checks"`
	Data   map[string]interface{} `json:"data"`
}

func newScenario(name string) *scenario {
	return &scenario{Name: name, Checks: []check{}, Data: map[string]interface{}{}}
}

func (s *scenario) check(name string, ok bool, format string, args ...interface{}) bool {
	detail := fmt.Sprintf(format, args...)
	s.Checks = append(s.Checks, check{Name: name, OK: ok, Detail: detail})
	status := "ok"
	if !ok {
		status = "FAILED"
	}
	fmt.Fprintf(os.Stderr, "[%s] %s: %s (%s)\n", s.Name, name, status, detail)
	return ok
}

func (s *scenario) abort(err error) {
	s.check("aborted", false, "%v", err)
}

// ctyResult is the Go side's encoding of one config map.
type ctyResult struct {
	Name      string `json:"name"`
	Schema    string `json:"schema"`
	Hex       string `json:"hex,omitempty"`
	ValueJSON string `json:"value_json,omitempty"`
	Error     string `json:"error,omitempty"`
}

// jobResult is what one example job produced through the driver.
type jobResult struct {
	Name       string `json:"name"`
	ConfigHex  string `json:"config_hex"`
	StartError string `json:"start_error,omitempty"`
	ExitCode   int32  `json:"exit_code"`
	Signal     int32  `json:"signal"`
	OOMKilled  bool   `json:"oom_killed"`
	Err        string `json:"err"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
}

type report struct {
	GoVersion string            `json:"go_version"`
	Scenarios []*scenario       `json:"scenarios"`
	Schemas   map[string]string `json:"schemas"`
	Cty       []ctyResult       `json:"cty"`
	Jobs      []jobResult       `json:"jobs"`
}

func writeReport(path string, r *report) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
