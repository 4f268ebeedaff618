package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Requests to cruzd's TCP API carry the identity they act for, signed with
// the root-only cluster key: only holders of the key (the agents) can act
// for a user over TCP.
//
// Every header the signature covers is known before the body is read: the
// body's SHA-256 travels in Cruz-Body-SHA256, so an agent checks who sent a
// request (and refuses strangers) without reading a byte of its body, then
// reads the body and checks it against the signed hash. The signature also
// covers the name of the node the request is for, so a request captured on
// its way to one agent cannot be replayed to another.
const (
	// HeaderWire is the wire protocol's version (WireVersion); an agent
	// refuses any other, naming both.
	HeaderWire      = "Cruz-Wire-Version"
	HeaderNode      = "Cruz-Node"
	HeaderBodyHash  = "Cruz-Body-SHA256"
	HeaderUID       = "Cruz-UID"
	HeaderGID       = "Cruz-GID"
	HeaderGroups    = "Cruz-Groups"
	HeaderUser      = "Cruz-User"
	HeaderTime      = "Cruz-Time"
	HeaderNonce     = "Cruz-Nonce"
	HeaderSignature = "Cruz-Signature"

	// MinNonceBytes and MaxNonceBytes bound a request's random nonce.
	MinNonceBytes = 16
	MaxNonceBytes = 64

	// WireVersion is the version of the signed TCP API this build speaks.
	// 1 (no Cruz-Wire-Version header): the body's hash was not sent, only
	// signed, and no node name was signed.
	WireVersion = "2"

	// MaxNodeName bounds the node name in a signed request (a host name).
	MaxNodeName = 255

	signatureVersion = "CRUZ-HMAC-SHA256-2"
)

// Identity is the user a signed request acts for.
type Identity struct {
	UID, GID uint32
	Groups   []uint32
	User     string
}

func formatGroups(groups []uint32) string {
	s := make([]string, len(groups))
	for i, g := range groups {
		s[i] = strconv.FormatUint(uint64(g), 10)
	}
	return strings.Join(s, ",")
}

// BodyHash is the hex SHA-256 of a request body.
func BodyHash(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// Canonical is the string a request's signature covers: method, request URI
// (path and query as sent), the node it is for, identity, time (unix
// seconds), nonce and the hex SHA-256 of the body, one per line.
func Canonical(method, requestURI, node string, id Identity, unixTime int64, nonce, bodyHash string) string {
	return strings.Join([]string{
		signatureVersion,
		method,
		requestURI,
		node,
		strconv.FormatUint(uint64(id.UID), 10),
		strconv.FormatUint(uint64(id.GID), 10),
		formatGroups(id.Groups),
		id.User,
		strconv.FormatInt(unixTime, 10),
		nonce,
		bodyHash,
	}, "\n")
}

// Signature is the hex HMAC-SHA256 of canonical under key.
func Signature(key []byte, canonical string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(canonical))
	return hex.EncodeToString(m.Sum(nil))
}

// NewNonce returns MinNonceBytes random bytes in hex.
func NewNonce() (string, error) {
	b := make([]byte, MinNonceBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// SignRequest sets the wire version, node, body hash, identity, time, nonce
// and signature headers of req, whose body is body (nil for none), for the
// agent of node, as of now. The request URI signed is req.URL.RequestURI(),
// which keeps the path's escaping (a job name with "%2F" stays one segment).
func SignRequest(req *http.Request, key []byte, node string, id Identity, body []byte, now time.Time) error {
	nonce, err := NewNonce()
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	t := now.Unix()
	bh := BodyHash(body)
	h := req.Header
	h.Set(HeaderWire, WireVersion)
	h.Set(HeaderNode, node)
	h.Set(HeaderBodyHash, bh)
	h.Set(HeaderUID, strconv.FormatUint(uint64(id.UID), 10))
	h.Set(HeaderGID, strconv.FormatUint(uint64(id.GID), 10))
	h.Set(HeaderGroups, formatGroups(id.Groups))
	h.Set(HeaderUser, id.User)
	h.Set(HeaderTime, strconv.FormatInt(t, 10))
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSignature, Signature(key, Canonical(req.Method, req.URL.RequestURI(), node, id, t, nonce, bh)))
	return nil
}

// SignedHeaders are the parsed authentication headers of a request.
type SignedHeaders struct {
	Node      string // the node the request is for
	BodyHash  string // hex SHA-256 of the body, lower case
	Identity  Identity
	Time      int64
	Nonce     string
	Signature []byte
}

// ErrWireVersion is returned by ParseSignedHeaders for a request of another
// wire protocol version.
var ErrWireVersion = errors.New("wire protocol version mismatch")

// ParseSignedHeaders reads and checks the syntax of a request's
// authentication headers; it does not check the signature. The wire version
// is checked first, so that an agent of another release is told that, not
// that some header is missing.
func ParseSignedHeaders(h http.Header) (SignedHeaders, error) {
	var s SignedHeaders
	get := func(name string, emptyOK bool) (string, error) {
		vs := h.Values(name)
		if len(vs) == 0 {
			return "", fmt.Errorf("header %s is missing", name)
		}
		if len(vs) > 1 {
			return "", fmt.Errorf("header %s is repeated", name)
		}
		if vs[0] == "" && !emptyOK {
			return "", fmt.Errorf("header %s is empty", name)
		}
		return vs[0], nil
	}
	id32 := func(name string) (uint32, error) {
		v, err := get(name, false)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || strconv.FormatUint(n, 10) != v {
			return 0, fmt.Errorf("header %s: %q is not a decimal id", name, v)
		}
		return uint32(n), nil
	}
	switch vs := h.Values(HeaderWire); {
	case len(vs) == 0 && len(h.Values(HeaderSignature)) > 0:
		return s, fmt.Errorf("%w: the request has no header %s (wire version 1, an older Cruz release); this agent speaks version %s: run the same Cruz release on every node",
			ErrWireVersion, HeaderWire, WireVersion)
	case len(vs) == 1 && vs[0] != WireVersion:
		return s, fmt.Errorf("%w: the request is of wire version %.20q, this agent speaks version %s: run the same Cruz release on every node",
			ErrWireVersion, vs[0], WireVersion)
	}
	if _, err := get(HeaderWire, false); err != nil {
		return s, err
	}
	var err error
	if s.Node, err = get(HeaderNode, false); err != nil {
		return s, err
	}
	if len(s.Node) > MaxNodeName {
		return s, fmt.Errorf("header %s: longer than %d bytes", HeaderNode, MaxNodeName)
	}
	if s.BodyHash, err = get(HeaderBodyHash, false); err != nil {
		return s, err
	}
	if b, err := hex.DecodeString(s.BodyHash); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != s.BodyHash {
		return s, fmt.Errorf("header %s: not a lower-case hex SHA-256", HeaderBodyHash)
	}
	if s.Identity.UID, err = id32(HeaderUID); err != nil {
		return s, err
	}
	if s.Identity.GID, err = id32(HeaderGID); err != nil {
		return s, err
	}
	groups, err := get(HeaderGroups, true)
	if err != nil {
		return s, err
	}
	if groups != "" {
		for _, g := range strings.Split(groups, ",") {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil || strconv.FormatUint(n, 10) != g {
				return s, fmt.Errorf("header %s: %q is not a comma-separated list of decimal ids", HeaderGroups, groups)
			}
			s.Identity.Groups = append(s.Identity.Groups, uint32(n))
		}
		if len(s.Identity.Groups) > 65536 {
			return s, fmt.Errorf("header %s: too many groups", HeaderGroups)
		}
	}
	if s.Identity.User, err = get(HeaderUser, false); err != nil {
		return s, err
	}
	tv, err := get(HeaderTime, false)
	if err != nil {
		return s, err
	}
	if s.Time, err = strconv.ParseInt(tv, 10, 64); err != nil || strconv.FormatInt(s.Time, 10) != tv {
		return s, fmt.Errorf("header %s: %q is not unix seconds", HeaderTime, tv)
	}
	if s.Nonce, err = get(HeaderNonce, false); err != nil {
		return s, err
	}
	if nb, err := hex.DecodeString(s.Nonce); err != nil || len(nb) < MinNonceBytes || len(nb) > MaxNonceBytes {
		return s, fmt.Errorf("header %s: not %d to %d bytes in hex", HeaderNonce, MinNonceBytes, MaxNonceBytes)
	}
	sig, err := get(HeaderSignature, false)
	if err != nil {
		return s, err
	}
	if s.Signature, err = hex.DecodeString(sig); err != nil || len(s.Signature) != sha256.Size {
		return s, fmt.Errorf("header %s: not a hex HMAC-SHA256", HeaderSignature)
	}
	return s, nil
}

// ErrBadSignature is returned by Verify for a signature that does not match.
var ErrBadSignature = errors.New("the signature does not match (wrong cluster key, or the request was altered)")

// ErrBodyHash is returned by CheckBody for a body that is not the one signed.
var ErrBodyHash = errors.New("the body is not the one signed (its SHA-256 differs from header " + HeaderBodyHash + "): the request was altered")

// Verify checks, in constant time, that s signs a request with this method
// and request URI under key: every header, including the body's hash, but
// not the body itself (see CheckBody), so that it can be done before the
// body is read.
func (s SignedHeaders) Verify(key []byte, method, requestURI string) error {
	want, _ := hex.DecodeString(Signature(key, Canonical(method, requestURI, s.Node, s.Identity, s.Time, s.Nonce, s.BodyHash)))
	if !hmac.Equal(want, s.Signature) {
		return ErrBadSignature
	}
	return nil
}

// CheckBody checks that body is the one whose hash s carries.
func (s SignedHeaders) CheckBody(body []byte) error {
	if !hmac.Equal([]byte(BodyHash(body)), []byte(s.BodyHash)) {
		return ErrBodyHash
	}
	return nil
}
