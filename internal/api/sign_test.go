package api

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	testKey = []byte("0123456789abcdef0123456789abcdef")
	testID  = Identity{UID: 1001, GID: 1001, Groups: []uint32{1001, 27}, User: "cruzt1"}
)

const testNode = "node1"

func signed(t *testing.T, method, target string, body []byte, id Identity, now time.Time) *http.Request {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	require.NoError(t, SignRequest(req, testKey, testNode, id, body, now))
	return req
}

func TestSignRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"stop":true}`)
	req := signed(t, "POST", "/v1/jobs/job-1/checkpoint?x=1", body, testID, now)
	h, err := ParseSignedHeaders(req.Header)
	require.NoError(t, err)
	assert.Equal(t, testID, h.Identity)
	assert.Equal(t, now.Unix(), h.Time)
	assert.Len(t, h.Nonce, 2*MinNonceBytes)
	assert.Equal(t, "/v1/jobs/job-1/checkpoint?x=1", req.RequestURI)
	assert.Equal(t, testNode, h.Node)
	assert.Equal(t, BodyHash(body), h.BodyHash)
	assert.Equal(t, WireVersion, req.Header.Get(HeaderWire))
	require.NoError(t, h.Verify(testKey, req.Method, req.RequestURI))
	require.NoError(t, h.CheckBody(body))
	assert.ErrorIs(t, h.CheckBody([]byte(`{"stop":false}`)), ErrBodyHash)

	// No groups: an empty header, still signed.
	noGroups := Identity{UID: 1002, GID: 1002, User: "cruzt2"}
	req = signed(t, "GET", "/v1/jobs", nil, noGroups, now)
	assert.Equal(t, []string{""}, req.Header.Values(HeaderGroups))
	h, err = ParseSignedHeaders(req.Header)
	require.NoError(t, err)
	assert.Equal(t, noGroups, h.Identity)
	require.NoError(t, h.Verify(testKey, "GET", "/v1/jobs"))
	require.NoError(t, h.CheckBody(nil))
	require.NoError(t, h.CheckBody([]byte{}), "no body and an empty body are the same")

	// Two signings of the same request differ by their nonce.
	r1 := signed(t, "GET", "/v1/jobs", nil, testID, now)
	r2 := signed(t, "GET", "/v1/jobs", nil, testID, now)
	assert.NotEqual(t, r1.Header.Get(HeaderNonce), r2.Header.Get(HeaderNonce))
	assert.NotEqual(t, r1.Header.Get(HeaderSignature), r2.Header.Get(HeaderSignature))
}

func TestSignatureCoversEverything(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"signal":15}`)
	req := signed(t, "POST", "/v1/jobs/job-1/signal", body, testID, now)
	base, err := ParseSignedHeaders(req.Header)
	require.NoError(t, err)
	require.NoError(t, base.Verify(testKey, "POST", "/v1/jobs/job-1/signal"))

	type change struct {
		name   string
		h      func(*SignedHeaders)
		method string
		uri    string
		key    []byte
	}
	for _, c := range []change{
		{name: "method", method: "DELETE"},
		{name: "uri", uri: "/v1/jobs/job-2/signal"},
		{name: "query", uri: "/v1/jobs/job-1/signal?checkpoints=1"},
		{name: "body hash", h: func(h *SignedHeaders) { h.BodyHash = BodyHash([]byte(`{"signal":9}`)) }},
		{name: "no body", h: func(h *SignedHeaders) { h.BodyHash = BodyHash(nil) }},
		{name: "node", h: func(h *SignedHeaders) { h.Node = "node2" }},
		{name: "key", key: []byte("another key, same length........")},
		{name: "uid", h: func(h *SignedHeaders) { h.Identity.UID = 0 }},
		{name: "gid", h: func(h *SignedHeaders) { h.Identity.GID = 0 }},
		{name: "groups", h: func(h *SignedHeaders) { h.Identity.Groups = append(h.Identity.Groups, 0) }},
		{name: "user", h: func(h *SignedHeaders) { h.Identity.User = "root" }},
		{name: "time", h: func(h *SignedHeaders) { h.Time++ }},
		// Its first byte changed to another: always a different nonce
		// (setting it to "00" left it as it was in 1 run of 256).
		{name: "nonce", h: func(h *SignedHeaders) { h.Nonce = otherFirstByte(h.Nonce) }},
		{name: "signature", h: func(h *SignedHeaders) { h.Signature[0] ^= 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := base
			h.Identity.Groups = append([]uint32(nil), base.Identity.Groups...)
			h.Signature = append([]byte(nil), base.Signature...)
			method, uri, key := "POST", "/v1/jobs/job-1/signal", testKey
			if c.h != nil {
				c.h(&h)
			}
			if c.method != "" {
				method = c.method
			}
			if c.uri != "" {
				uri = c.uri
			}
			if c.key != nil {
				key = c.key
			}
			assert.ErrorIs(t, h.Verify(key, method, uri), ErrBadSignature)
		})
	}
}

// otherFirstByte returns hex nonce n with its first byte made different.
func otherFirstByte(n string) string {
	b, err := hex.DecodeString(n)
	if err != nil || len(b) == 0 {
		panic(fmt.Sprintf("nonce %q is not hex", n))
	}
	b[0] ^= 0xff
	return hex.EncodeToString(b)
}

func TestCanonicalIsUnambiguous(t *testing.T) {
	a := Canonical("GET", "/v1/jobs", "node1", Identity{UID: 1, GID: 2, Groups: []uint32{3, 4}, User: "u"}, 5, "n", "h")
	assert.Equal(t, "CRUZ-HMAC-SHA256-2\nGET\n/v1/jobs\nnode1\n1\n2\n3,4\nu\n5\nn\nh", a)
	b := Canonical("GET", "/v1/jobs", "node1", Identity{UID: 1, GID: 2, Groups: []uint32{34}, User: "u"}, 5, "n", "h")
	assert.NotEqual(t, a, b)
}

func TestParseSignedHeadersRefusesMalformed(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := signed(t, "GET", "/v1/jobs", nil, testID, now).Header
	for _, c := range []struct {
		name, header, value string
		del                 bool
		want                string
	}{
		{name: "no wire version", header: HeaderWire, del: true,
			want: "wire protocol version mismatch: the request has no header Cruz-Wire-Version (wire version 1, an older Cruz release); this agent speaks version 2"},
		{name: "other wire version", header: HeaderWire, value: "3",
			want: `wire protocol version mismatch: the request is of wire version "3", this agent speaks version 2: run the same Cruz release on every node`},
		{name: "no node", header: HeaderNode, del: true, want: "header Cruz-Node is missing"},
		{name: "empty node", header: HeaderNode, value: "", want: "header Cruz-Node is empty"},
		{name: "long node", header: HeaderNode, value: strings.Repeat("n", 256), want: "header Cruz-Node: longer than 255 bytes"},
		{name: "no body hash", header: HeaderBodyHash, del: true, want: "header Cruz-Body-SHA256 is missing"},
		{name: "short body hash", header: HeaderBodyHash, value: "abcd", want: "Cruz-Body-SHA256: not a lower-case hex SHA-256"},
		{name: "upper-case body hash", header: HeaderBodyHash, value: strings.ToUpper(BodyHash(nil)), want: "Cruz-Body-SHA256"},
		{name: "no uid", header: HeaderUID, del: true, want: "header Cruz-UID is missing"},
		{name: "uid text", header: HeaderUID, value: "root", want: "Cruz-UID"},
		{name: "uid negative", header: HeaderUID, value: "-1", want: "Cruz-UID"},
		{name: "uid too big", header: HeaderUID, value: "4294967296", want: "Cruz-UID"},
		{name: "uid leading zero", header: HeaderUID, value: "01001", want: "Cruz-UID"},
		{name: "no gid", header: HeaderGID, del: true, want: "Cruz-GID is missing"},
		{name: "no groups", header: HeaderGroups, del: true, want: "Cruz-Groups is missing"},
		{name: "groups spaces", header: HeaderGroups, value: "1, 2", want: "Cruz-Groups"},
		{name: "groups trailing comma", header: HeaderGroups, value: "1,", want: "Cruz-Groups"},
		{name: "no user", header: HeaderUser, del: true, want: "Cruz-User is missing"},
		{name: "empty user", header: HeaderUser, value: "", want: "Cruz-User is empty"},
		{name: "no time", header: HeaderTime, del: true, want: "Cruz-Time is missing"},
		{name: "time text", header: HeaderTime, value: "now", want: "Cruz-Time"},
		{name: "no nonce", header: HeaderNonce, del: true, want: "Cruz-Nonce is missing"},
		{name: "short nonce", header: HeaderNonce, value: "0123456789abcdef", want: "Cruz-Nonce"},
		{name: "nonce not hex", header: HeaderNonce, value: "zz23456789abcdef0123456789abcdef", want: "Cruz-Nonce"},
		{name: "no signature", header: HeaderSignature, del: true, want: "Cruz-Signature is missing"},
		{name: "short signature", header: HeaderSignature, value: "abcd", want: "Cruz-Signature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := good.Clone()
			if c.del {
				h.Del(c.header)
			} else {
				h.Set(c.header, c.value)
			}
			_, err := ParseSignedHeaders(h)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	h := good.Clone()
	h.Add(HeaderUID, "0")
	_, err := ParseSignedHeaders(h)
	assert.ErrorContains(t, err, "repeated")
	// Not signed at all: the first header missing is named.
	_, err = ParseSignedHeaders(http.Header{})
	assert.EqualError(t, err, "header Cruz-Wire-Version is missing")
}
