package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"wasmtime-driver/gen/drivers"
	"wasmtime-driver/gen/structs"
)

// taskTimeout bounds every wait on a task so a hung driver fails the run.
const taskTimeout = 60 * time.Second

func randomHex(n int) string {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	return hex.EncodeToString(buf)
}

// allocation is an allocation directory in the layout Nomad's client builds
// before StartTask, with one task directory.
type allocation struct {
	id      string
	dir     string
	task    string
	taskDir string
	stdout  string
	stderr  string
}

func newAllocation(scratch, task string) (*allocation, error) {
	id := fmt.Sprintf("%s-%s-%s-%s-%s", randomHex(4), randomHex(2), randomHex(2), randomHex(2), randomHex(6))
	a := &allocation{id: id, dir: filepath.Join(scratch, id), task: task}
	a.taskDir = filepath.Join(a.dir, task)
	logs := filepath.Join(a.dir, "alloc", "logs")
	dirs := []string{
		logs,
		filepath.Join(a.dir, "alloc", "data"),
		filepath.Join(a.dir, "alloc", "tmp"),
		filepath.Join(a.taskDir, "local"),
		filepath.Join(a.taskDir, "secrets"),
		filepath.Join(a.taskDir, "tmp"),
		filepath.Join(a.taskDir, "private"),
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	a.stdout = filepath.Join(logs, "."+task+".stdout.fifo")
	a.stderr = filepath.Join(logs, "."+task+".stderr.fifo")
	return a, nil
}

// fifoReader plays logmon's part for one FIFO: it creates it with mode 0600
// and opens it for reading in the background before StartTask, which blocks
// until the driver opens the write end, then reads until EOF.
type fifoReader struct {
	path string
	done chan struct{}
	data []byte
	err  error
}

func startFIFOReader(path string) (*fifoReader, error) {
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("mkfifo %s: %w", path, err)
	}
	r := &fifoReader{path: path, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		file, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			r.err = err
			return
		}
		defer file.Close()
		r.data, r.err = io.ReadAll(file)
	}()
	return r, nil
}

// finish waits for EOF and returns false when the driver did not close its
// write end in time. The reader is then released by opening and closing a
// write end here, which also covers a driver that never opened the FIFO.
func (r *fifoReader) finish(timeout time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(timeout):
	}
	if file, err := os.OpenFile(r.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		file.Close()
	}
	<-r.done
	return false
}

// taskConfig fills a TaskConfig as Nomad's client does for a driver without
// filesystem isolation; extraEnv is the job's env block.
func taskConfig(a *allocation, job string, encoded []byte, extraEnv map[string]string) *drivers.TaskConfig {
	taskID := fmt.Sprintf("%s/%s/%s", a.id, a.task, randomHex(4))
	env := map[string]string{
		"NOMAD_ALLOC_DIR":   filepath.Join(a.dir, "alloc"),
		"NOMAD_TASK_DIR":    filepath.Join(a.taskDir, "local"),
		"NOMAD_SECRETS_DIR": filepath.Join(a.taskDir, "secrets"),
		"NOMAD_ALLOC_ID":    a.id,
		"NOMAD_TASK_NAME":   a.task,
		"NOMAD_JOB_NAME":    job,
		"NOMAD_GROUP_NAME":  job,
		"PATH":              "/usr/bin:/bin",
	}
	for key, value := range extraEnv {
		env[key] = value
	}
	return &drivers.TaskConfig{
		Id:                  taskID,
		Name:                a.task,
		MsgpackDriverConfig: encoded,
		Env:                 env,
		Resources: &drivers.Resources{
			AllocatedResources: &drivers.AllocatedTaskResources{
				Cpu:    &drivers.AllocatedCpuResources{CpuShares: 100},
				Memory: &drivers.AllocatedMemoryResources{MemoryMb: 128},
			},
			LinuxResources: &drivers.LinuxResources{CpuShares: 100, MemoryLimitBytes: 128 << 20},
		},
		AllocDir:      a.dir,
		StdoutPath:    a.stdout,
		StderrPath:    a.stderr,
		TaskGroupName: job,
		JobName:       job,
		JobId:         job,
		AllocId:       a.id,
		Namespace:     "default",
		NodeName:      "conformance",
		NodeId:        "00000000-0000-0000-0000-000000000000",
	}
}

// startedTask is a task after a successful StartTask, with its log readers.
type startedTask struct {
	id     string
	stdout *fifoReader
	stderr *fifoReader
}

// startTask builds the allocation, starts logmon's readers and calls
// StartTask. On a StartTask error the readers are released and the error
// returned as is, so the caller can inspect its gRPC status.
func startTask(ss *session, s *scenario, job string, a *allocation, encoded []byte, env map[string]string) (*startedTask, error) {
	stdout, err := startFIFOReader(a.stdout)
	if err != nil {
		return nil, err
	}
	stderr, err := startFIFOReader(a.stderr)
	if err != nil {
		return nil, err
	}
	config := taskConfig(a, job, encoded, env)
	ctx, cancel := context.WithTimeout(context.Background(), taskTimeout)
	defer cancel()
	response, err := ss.plugin.driver.StartTask(ctx, &drivers.StartTaskRequest{Task: config})
	if err != nil {
		stdout.finish(0)
		stderr.finish(0)
		return nil, err
	}
	handle := response.Handle
	if s.check(job+"_handle_set", handle != nil && handle.Config != nil, "StartTaskResponse.handle and handle.config present") {
		s.check(job+"_handle_echoes_id", handle.Config.Id == config.Id, "handle.config.id %q, sent %q", handle.Config.Id, config.Id)
		s.check(job+"_handle_version", handle.Version != 0, "handle.version %d (0 is reserved for pre-0.9 state)", handle.Version)
	}
	return &startedTask{id: config.Id, stdout: stdout, stderr: stderr}, nil
}

func waitTask(ss *session, id string, timeout time.Duration) (*drivers.WaitTaskResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return ss.plugin.driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: id})
}

func destroyTask(ss *session, s *scenario, job, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), taskTimeout)
	defer cancel()
	_, err := ss.plugin.driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: id, Force: true})
	s.check(job+"_destroy", err == nil, "DestroyTask(force) returned %v", err)
}

func runJobs(in *input, ss *session, s *scenario, result *report) {
	for _, job := range in.Jobs {
		outcome := runOneJob(in, ss, s, job)
		result.Jobs = append(result.Jobs, outcome)
	}
}

func runOneJob(in *input, ss *session, s *scenario, job jobInput) jobResult {
	outcome := jobResult{Name: job.Name}
	encoded, _, err := encodeConfig(ss.taskSpec, []byte(job.Config))
	if !s.check(job.Name+"_config_encodes", err == nil, "config %s: %v", job.Config, err) {
		return outcome
	}
	outcome.ConfigHex = hex.EncodeToString(encoded)
	a, err := newAllocation(in.ScratchDir, job.Task)
	if err != nil {
		s.abort(err)
		return outcome
	}
	task, err := startTask(ss, s, job.Name, a, encoded, job.Env)
	if !s.check(job.Name+"_start", err == nil, "StartTask returned %v", err) {
		outcome.StartError = err.Error()
		return outcome
	}
	response, err := waitTask(ss, task.id, taskTimeout)
	if s.check(job.Name+"_wait", err == nil, "WaitTask returned %v", err) &&
		s.check(job.Name+"_wait_result_set", response.Result != nil, "WaitTaskResponse.result present") {
		outcome.ExitCode = response.Result.ExitCode
		outcome.Signal = response.Result.Signal
		outcome.OOMKilled = response.Result.OomKilled
		outcome.Err = response.Err
	}
	destroyTask(ss, s, job.Name, task.id)
	s.check(job.Name+"_stdout_eof", task.stdout.finish(10*time.Second), "stdout FIFO reached EOF after DestroyTask")
	s.check(job.Name+"_stderr_eof", task.stderr.finish(10*time.Second), "stderr FIFO reached EOF after DestroyTask")
	outcome.Stdout = string(task.stdout.data)
	outcome.Stderr = string(task.stderr.data)
	return outcome
}

// runStopSpinning starts a task that never ends by itself, checks that it is
// still running after a moment, stops it and checks the WaitTask result.
func runStopSpinning(in *input, ss *session, s *scenario) {
	job := in.Spin
	encoded, _, err := encodeConfig(ss.taskSpec, []byte(job.Config))
	if !s.check("spin_config_encodes", err == nil, "config %s: %v", job.Config, err) {
		return
	}
	a, err := newAllocation(in.ScratchDir, job.Task)
	if err != nil {
		s.abort(err)
		return
	}
	task, err := startTask(ss, s, "spin", a, encoded, nil)
	if !s.check("spin_start", err == nil, "StartTask returned %v", err) {
		return
	}
	type waitOutcome struct {
		response *drivers.WaitTaskResponse
		err      error
	}
	waited := make(chan waitOutcome, 1)
	go func() {
		response, err := waitTask(ss, task.id, taskTimeout)
		waited <- waitOutcome{response, err}
	}()
	select {
	case early := <-waited:
		s.check("spin_still_running", false, "WaitTask returned before StopTask: %v %v", early.response, early.err)
		destroyTask(ss, s, "spin", task.id)
		return
	case <-time.After(500 * time.Millisecond):
		s.check("spin_still_running", true, "WaitTask still blocked 0.5 s after StartTask")
	}

	ctx, cancel := context.WithTimeout(context.Background(), taskTimeout)
	defer cancel()
	stopped := time.Now()
	_, err = ss.plugin.driver.StopTask(ctx, &drivers.StopTaskRequest{
		TaskId: task.id, Timeout: durationpb.New(2 * time.Second), Signal: "SIGINT",
	})
	s.Data["stop_task_seconds"] = time.Since(stopped).Seconds()
	s.check("spin_stop", err == nil, "StopTask returned %v", err)

	select {
	case outcome := <-waited:
		if s.check("spin_wait", outcome.err == nil, "WaitTask returned %v", outcome.err) &&
			s.check("spin_wait_result_set", outcome.response.Result != nil, "WaitTaskResponse.result present") {
			r := outcome.response.Result
			s.Data["exit_code"] = r.ExitCode
			s.Data["signal"] = r.Signal
			s.Data["err"] = outcome.response.Err
			s.check("spin_result_not_success", r.ExitCode != 0 || r.Signal != 0 || outcome.response.Err != "",
				"exit_code %d signal %d err %q: Nomad counts exit 0, signal 0 and no err as success", r.ExitCode, r.Signal, outcome.response.Err)
		}
	case <-time.After(taskTimeout):
		s.check("spin_wait", false, "WaitTask did not return within %s after StopTask", taskTimeout)
	}
	destroyTask(ss, s, "spin", task.id)
	s.check("spin_stdout_eof", task.stdout.finish(10*time.Second), "stdout FIFO reached EOF after DestroyTask")
	s.check("spin_stderr_eof", task.stderr.finish(10*time.Second), "stderr FIFO reached EOF after DestroyTask")
}

// recoverableDetail returns the first status detail if it is a
// RecoverableError, as Nomad's driver client reads it.
func recoverableDetail(err error) (*structs.RecoverableError, *status.Status) {
	st := status.Convert(err)
	details := st.Details()
	if len(details) == 0 {
		return nil, st
	}
	detail, _ := details[0].(*structs.RecoverableError)
	return detail, st
}

func runStartFailures(in *input, ss *session, s *scenario) {
	// A log FIFO in a directory that does not exist: the driver cannot open
	// it, which is a recoverable start failure.
	encoded, _, err := encodeConfig(ss.taskSpec, []byte(in.Recoverable.Config))
	if s.check("recoverable_config_encodes", err == nil, "config %s: %v", in.Recoverable.Config, err) {
		a, err := newAllocation(in.ScratchDir, in.Recoverable.Task)
		if err != nil {
			s.abort(err)
			return
		}
		config := taskConfig(a, "recoverable", encoded, nil)
		missing := filepath.Join(a.dir, "alloc", "missing-dir")
		config.StdoutPath = filepath.Join(missing, "."+a.task+".stdout.fifo")
		config.StderrPath = filepath.Join(missing, "."+a.task+".stderr.fifo")
		ctx, cancel := context.WithTimeout(context.Background(), taskTimeout)
		_, err = ss.plugin.driver.StartTask(ctx, &drivers.StartTaskRequest{Task: config})
		cancel()
		if s.check("recoverable_fails", err != nil, "StartTask with log FIFOs in a missing directory returned %v", err) {
			detail, st := recoverableDetail(err)
			s.Data["recoverable_status"] = describeStatus(st)
			s.check("recoverable_code", st.Code() == codes.FailedPrecondition, "code %v", st.Code())
			s.check("recoverable_detail", detail != nil && detail.Recoverable,
				"details[0] %v must be RecoverableError{recoverable: true}", st.Details())
		} else {
			destroyTask(ss, s, "recoverable", config.Id)
		}
	}

	// A config the driver rejects: an unrecoverable start failure.
	encoded, _, err = encodeConfig(ss.taskSpec, []byte(in.Invalid.Config))
	if !s.check("invalid_config_encodes", err == nil, "config %s: %v", in.Invalid.Config, err) {
		return
	}
	a, err := newAllocation(in.ScratchDir, in.Invalid.Task)
	if err != nil {
		s.abort(err)
		return
	}
	task, err := startTask(ss, s, "invalid", a, encoded, nil)
	if !s.check("invalid_fails", err != nil, "StartTask with an invalid config returned %v", err) {
		destroyTask(ss, s, "invalid", task.id)
		return
	}
	detail, st := recoverableDetail(err)
	s.Data["invalid_status"] = describeStatus(st)
	s.Data["invalid_message"] = st.Message()
	s.check("invalid_not_recoverable", detail == nil || !detail.Recoverable,
		"status %v details %v: an invalid config must not be retried", st.Code(), st.Details())
	s.check("invalid_not_unhandled", !strings.Contains(st.Message(), "Exception calling application"),
		"message %q: grpcio reports an unhandled exception this way", st.Message())
}

func runCtyCases(in *input, ss *session, s *scenario, result *report) {
	for _, c := range in.CtyCases {
		outcome := ctyResult{Name: c.Name, Schema: c.Schema}
		spec := ss.taskSpec
		if c.Schema == "plugin" {
			spec = ss.pluginSpec
		} else if c.Schema != "task" {
			s.check(c.Name+"_schema_name", false, "schema %q is neither task nor plugin", c.Schema)
			continue
		}
		encoded, value, err := encodeConfig(spec, []byte(c.Config))
		if err != nil {
			outcome.Error = err.Error()
		} else {
			outcome.Hex = hex.EncodeToString(encoded)
			outcome.ValueJSON = ctyValueJSON(value)
		}
		result.Cty = append(result.Cty, outcome)
	}
	s.check("cases_encoded", len(result.Cty) == len(in.CtyCases), "%d of %d cases", len(result.Cty), len(in.CtyCases))
}

func describeStatus(st *status.Status) string {
	return fmt.Sprintf("code %v message %q details %v", st.Code(), st.Message(), st.Details())
}
