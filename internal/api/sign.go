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
const (
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

	signatureVersion = "CRUZ-HMAC-SHA256-1"
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
// (path and query as sent), identity, time (unix seconds), nonce and the hex
// SHA-256 of the body, one per line.
func Canonical(method, requestURI string, id Identity, unixTime int64, nonce, bodyHash string) string {
	return strings.Join([]string{
		signatureVersion,
		method,
		requestURI,
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

// SignRequest sets the identity, time, nonce and signature headers of req,
// whose body is body (nil for none), as of now.
func SignRequest(req *http.Request, key []byte, id Identity, body []byte, now time.Time) error {
	nonce, err := NewNonce()
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	t := now.Unix()
	h := req.Header
	h.Set(HeaderUID, strconv.FormatUint(uint64(id.UID), 10))
	h.Set(HeaderGID, strconv.FormatUint(uint64(id.GID), 10))
	h.Set(HeaderGroups, formatGroups(id.Groups))
	h.Set(HeaderUser, id.User)
	h.Set(HeaderTime, strconv.FormatInt(t, 10))
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSignature, Signature(key, Canonical(req.Method, req.URL.RequestURI(), id, t, nonce, BodyHash(body))))
	return nil
}

// SignedHeaders are the parsed authentication headers of a request.
type SignedHeaders struct {
	Identity  Identity
	Time      int64
	Nonce     string
	Signature []byte
}

// ParseSignedHeaders reads and checks the syntax of a request's
// authentication headers; it does not check the signature.
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
	var err error
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

// Verify checks, in constant time, that s signs a request with this method,
// request URI and body under key.
func (s SignedHeaders) Verify(key []byte, method, requestURI string, body []byte) error {
	want, _ := hex.DecodeString(Signature(key, Canonical(method, requestURI, s.Identity, s.Time, s.Nonce, BodyHash(body))))
	if !hmac.Equal(want, s.Signature) {
		return ErrBadSignature
	}
	return nil
}
