package agent

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
)

// FuzzRunRequest: a run request's body, whatever it holds, is decoded and
// checked without panicking; what is refused is refused as invalid input
// (400), and what is accepted holds what the rest of the agent relies on
// (a command, 1 to maxPodsPerJob ranks, a valid name, an absolute working
// directory, KEY=VALUE environment entries) and is accepted again as it is.
func FuzzRunRequest(f *testing.F) {
	for _, s := range []string{
		`{"np":4,"argv":["/bin/app","x"],"env":["A=1"],"dir":"/home/u"}`,
		`{"name":"my.job","np":0,"plain":true,"argv":["sleep","1"],"dir":"/"}`,
		`{"np":1,"argv":["/x"],"dir":"/","nodes":["node1","node2"],"interval":"30s","mpi":"openmpi"}`,
		`{"np":257,"argv":["a"],"dir":"/"}`, `{"np":-1}`, `{"argv":[""]}`, `{"argv":["a"],"dir":"rel"}`,
		`{"argv":["a"],"dir":"/","env":["=x","NOEQ","A=\u0000"]}`, `{"unknown":1}`, `[]`, `null`, `{"np":1e99}`,
		`{"argv":["/a/b c"],"dir":"/","name":"-bad"}`, `{"argv":["a"],"dir":"/"}{"argv":["b"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/v1/jobs", bytes.NewReader(body))
		var req api.RunRequest
		err := decode(r, &req)
		if err == nil {
			err = validateRun(&req)
		}
		if err != nil {
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("refused, but not as invalid input: %v", err)
			}
			return
		}
		if len(req.Argv) == 0 || req.Argv[0] == "" {
			t.Fatalf("accepted without a command: %+v", req)
		}
		if req.NP < 1 || req.NP > maxPodsPerJob || (req.Plain && req.NP != 1) {
			t.Fatalf("accepted %d ranks (plain %v)", req.NP, req.Plain)
		}
		if !jobNameRE.MatchString(req.Name) {
			t.Fatalf("accepted job name %q", req.Name)
		}
		if !filepath.IsAbs(req.Dir) {
			t.Fatalf("accepted working directory %q", req.Dir)
		}
		for _, kv := range req.Env {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
				t.Fatalf("accepted environment entry %q", kv)
			}
		}
		again := req
		if err := validateRun(&again); err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("accepted %+v, then %v / %+v", req, err, again)
		}
	})
}
