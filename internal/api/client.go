package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// Client talks to one cruzd, over its unix socket or, signed with the
// cluster key, over its TCP API.
type Client struct {
	socket string // unix socket, or TCP address when key is set
	http   *http.Client
	signed bool   // TCP API: every request is signed with key, for id
	node   string // TCP API: the name of the node whose agent listens at socket
	key    []byte // cluster key
	id     Identity
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// NewSignedClient returns a client for the TCP API of the agent of node at
// addr ("IP:PORT") that acts for id, signing every request with the cluster
// key, for that node only.
func NewSignedClient(addr, node string, key []byte, id Identity) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		DisableCompression: true,
	}
	// An agent never redirects. Following one would send the request (and
	// its body) somewhere else, re-signed or not: refuse it.
	noRedirect := func(req *http.Request, _ []*http.Request) error {
		loc := ""
		if req.Response != nil {
			loc = req.Response.Header.Get("Location")
		}
		return fmt.Errorf("the agent of node %s at %s answered with a redirect (to %.200q); cruz never follows redirects (is something else listening there?)",
			node, addr, loc)
	}
	id.Groups = append([]uint32(nil), id.Groups...)
	return &Client{socket: addr, http: &http.Client{Transport: tr, CheckRedirect: noRedirect}, signed: true, node: node,
		key: append([]byte(nil), key...), id: id}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// send makes a request and returns a 2xx response; any other status becomes
// an *Error with the agent's message.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	var raw []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
		raw = b
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://cruzd"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.signed {
		if err := SignRequest(req, c.key, c.node, c.id, raw, time.Now()); err != nil {
			return nil, err
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if c.signed {
			return nil, fmt.Errorf("talk to the cruz agent's TCP API at %s: %w", c.socket, err)
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no cruz agent at %s: start cruzd (as root), or point CRUZ_SOCKET / --socket at its socket", c.socket)
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("cannot connect to the cruz agent at %s: %w (the socket must be world-writable; check cruzd)", c.socket, err)
		}
		return nil, fmt.Errorf("talk to the cruz agent at %s: %w", c.socket, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var eb ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("agent answered %s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return nil, &Error{Status: resp.StatusCode, Message: eb.Error}
	}
	return resp, nil
}

// Version asks the agent what it runs.
func (c *Client) Version(ctx context.Context) (Version, error) {
	var v Version
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}

// Jobs lists the jobs the caller may see.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var l JobList
	return l.Jobs, c.do(ctx, http.MethodGet, "/v1/jobs", nil, &l)
}

// Job tells about one job, by id or name.
func (c *Client) Job(ctx context.Context, ref string) (Job, error) {
	var j Job
	return j, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(ref), nil, &j)
}

// Checkpoint takes a checkpoint of a running job.
func (c *Client) Checkpoint(ctx context.Context, ref string, req CheckpointRequest) (Checkpoint, error) {
	var ck Checkpoint
	return ck, c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(ref)+"/checkpoint", req, &ck)
}

// Checkpoints lists a job's complete checkpoints.
func (c *Client) Checkpoints(ctx context.Context, ref string) (CheckpointList, error) {
	var l CheckpointList
	return l, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(ref)+"/checkpoints", nil, &l)
}

// Signal forwards a signal to a job.
func (c *Client) Signal(ctx context.Context, ref string, sig int) error {
	return c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(ref)+"/signal", SignalRequest{Signal: sig}, nil)
}

// Remove kills a job if it runs and forgets it; with checkpoints, its
// checkpoints are deleted too.
func (c *Client) Remove(ctx context.Context, ref string, checkpoints bool) error {
	q := ""
	if checkpoints {
		q = "?checkpoints=1"
	}
	return c.do(ctx, http.MethodDelete, "/v1/jobs/"+url.PathEscape(ref)+q, nil, nil)
}

// Run starts a job and returns its attached stream.
func (c *Client) Run(ctx context.Context, req RunRequest) (*Stream, error) {
	return c.stream(ctx, http.MethodPost, "/v1/jobs", req)
}

// Restart restores a job from a checkpoint and returns its attached stream.
func (c *Client) Restart(ctx context.Context, ref string, req RestartRequest) (*Stream, error) {
	return c.stream(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(ref)+"/restart", req)
}

// RunSlurm starts the job of a Slurm step, or resumes it if Slurm requeued
// it, and returns its attached stream.
func (c *Client) RunSlurm(ctx context.Context, req RunRequest) (*Stream, error) {
	return c.stream(ctx, http.MethodPost, "/v1/slurm/steps", req)
}

// SlurmEnd ends what runs for a Slurm job (see SlurmEndRequest).
func (c *Client) SlurmEnd(ctx context.Context, req SlurmEndRequest) (SlurmEndResult, error) {
	var out SlurmEndResult
	err := c.do(ctx, http.MethodPost, "/v1/slurm/end", req, &out)
	return out, err
}

// JobAt asks node's agent (through this one) about a job: for a task of a
// Slurm step on another node than the step's coordinator.
func (c *Client) JobAt(ctx context.Context, ref, node string) (Job, error) {
	var j Job
	err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(ref)+"?at="+url.QueryEscape(node), nil, &j)
	return j, err
}

// Attach follows a running job's output from the start of its current run.
func (c *Client) Attach(ctx context.Context, ref string) (*Stream, error) {
	return c.stream(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(ref)+"/attach", nil)
}

func (c *Client) stream(ctx context.Context, method, path string, in any) (*Stream, error) {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &Stream{body: resp.Body, sc: sc}, nil
}

// Stream reads the frames of an attached job.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Next returns the next frame; io.EOF when the agent closed the stream.
func (s *Stream) Next() (*Frame, error) {
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	var f Frame
	if err := json.Unmarshal(s.sc.Bytes(), &f); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return &f, nil
}

// Close ends the stream (the job goes on).
func (s *Stream) Close() error { return s.body.Close() }

// Call makes any API request: in is sent as JSON (if not nil), the answer
// decoded into out (if not nil). Agents use it for their node operations.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out)
}

// OpenStream makes a request whose answer is newline-delimited JSON and
// returns its body for the caller to decode.
func (c *Client) OpenStream(ctx context.Context, method, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, method, path, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// CloseIdle closes the client's idle connections.
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }

// Queue lists the jobs of every node of the cluster (cruz status --all).
func (c *Client) Queue(ctx context.Context) (Queue, error) {
	var q Queue
	return q, c.do(ctx, http.MethodGet, "/v1/queue", nil, &q)
}

// Progressing makes a request that asked for progress ("progress": true)
// and reads its stream: every progress frame goes to on, and the frame
// with the result is returned; an error frame is returned as an error.
func (c *Client) Progressing(ctx context.Context, method, path string, in any, on func(Progress)) (*Frame, error) {
	s, err := c.stream(ctx, method, path, in)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	for {
		f, err := s.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("the agent ended the answer to %s %s without a result", method, path)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case f.Progress != nil:
			on(*f.Progress)
		case f.Error != "":
			return nil, errors.New(f.Error)
		default:
			return f, nil
		}
	}
}
