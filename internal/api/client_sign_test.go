package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A signed client signs the request URI as sent, escaping kept, for the node
// it was made for, and never follows a redirect.
func TestSignedClient(t *testing.T) {
	var followed atomic.Bool
	var seen atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Store(true)
			return
		}
		h, err := ParseSignedHeaders(r.Header)
		require.NoError(t, err)
		assert.Equal(t, "node7", h.Node)
		assert.NoError(t, h.Verify(testKey, r.Method, r.RequestURI), "signed %s", r.RequestURI)
		seen.Store(r.RequestURI)
		if strings.HasSuffix(r.RequestURI, "/moved") {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		writeTestJSON(w, `{"id":"x"}`)
	}))
	defer srv.Close()
	c := NewSignedClient(strings.TrimPrefix(srv.URL, "http://"), "node7", testKey, testID)

	_, err := c.Job(context.Background(), "a/b c")
	require.NoError(t, err)
	assert.Equal(t, "/v1/jobs/a%2Fb%20c", seen.Load(), "the escaped path is what is sent and signed")

	_, err = c.Job(context.Background(), "moved")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `the agent of node node7 at `+strings.TrimPrefix(srv.URL, "http://")+` answered with a redirect (to "/elsewhere")`)
	assert.Contains(t, err.Error(), "cruz never follows redirects")
	assert.False(t, followed.Load(), "the redirect was not followed")
}

func writeTestJSON(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(s))
}
