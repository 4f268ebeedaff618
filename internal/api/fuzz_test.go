package api

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"
)

// FuzzSignedHeaders: parsing any set of authentication headers never
// panics; headers that parse are canonical (printing the parsed values
// gives the same headers back, so one request has one reading), and their
// signature is checked without panicking. An identity signed by
// SignRequest parses back to itself and verifies.
func FuzzSignedHeaders(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	req, _ := http.NewRequest("POST", "http://cruzd/v1/jobs/a%2Fb/checkpoint", nil)
	_ = SignRequest(req, testKey, "node1", testID, []byte(`{"stop":true}`), now)
	h := req.Header
	f.Add(h.Get(HeaderWire), h.Get(HeaderNode), h.Get(HeaderBodyHash), h.Get(HeaderUID), h.Get(HeaderGID), h.Get(HeaderGroups),
		h.Get(HeaderUser), h.Get(HeaderTime), h.Get(HeaderNonce), h.Get(HeaderSignature))
	f.Add("2", "n", BodyHash(nil), "0", "0", "", "root", "-1", "00", "zz")
	f.Add("1", "", "", "01", "4294967296", "1,,2", "", "1e9", "", "")
	f.Fuzz(func(t *testing.T, wire, node, bodyHash, uid, gid, groups, user, tm, nonce, sig string) {
		in := http.Header{}
		for k, v := range map[string]string{HeaderWire: wire, HeaderNode: node, HeaderBodyHash: bodyHash, HeaderUID: uid, HeaderGID: gid,
			HeaderGroups: groups, HeaderUser: user, HeaderTime: tm, HeaderNonce: nonce, HeaderSignature: sig} {
			in.Set(k, v)
		}
		s, err := ParseSignedHeaders(in)
		if err == nil {
			out := map[string]string{HeaderWire: WireVersion, HeaderNode: s.Node, HeaderBodyHash: s.BodyHash,
				HeaderUID: strconv.FormatUint(uint64(s.Identity.UID), 10), HeaderGID: strconv.FormatUint(uint64(s.Identity.GID), 10),
				HeaderGroups: formatGroups(s.Identity.Groups), HeaderUser: s.Identity.User, HeaderTime: strconv.FormatInt(s.Time, 10),
				HeaderNonce: s.Nonce}
			for k, v := range out {
				if in.Get(k) != v {
					t.Fatalf("header %s %q parses to %q", k, in.Get(k), v)
				}
			}
			_ = s.Verify(testKey, "GET", "/v1/jobs")
			_ = s.CheckBody(nil)
		}

		// Signing: the identity, node and time read back as signed.
		id := Identity{UID: uint32(len(uid)), GID: uint32(len(gid)), User: user}
		for _, c := range groups {
			id.Groups = append(id.Groups, uint32(c))
		}
		r, err := http.NewRequest("GET", "http://cruzd/v1/jobs", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(r, testKey, node, id, []byte(bodyHash), now); err != nil {
			t.Fatal(err)
		}
		back, err := ParseSignedHeaders(r.Header)
		if user == "" || node == "" || len(node) > MaxNodeName {
			if err == nil {
				t.Fatalf("user %q, node %q: accepted", user, node)
			}
			return
		}
		if err != nil {
			t.Fatalf("signed request does not parse: %v", err)
		}
		if back.Identity.UID != id.UID || back.Identity.GID != id.GID || back.Identity.User != id.User ||
			!slices.Equal(back.Identity.Groups, id.Groups) || back.Node != node || back.Time != now.Unix() {
			t.Fatalf("signed %+v for %q, read back %+v for %q", id, node, back.Identity, back.Node)
		}
		if err := back.Verify(testKey, "GET", "/v1/jobs"); err != nil {
			t.Fatal(err)
		}
		if err := back.CheckBody([]byte(bodyHash)); err != nil {
			t.Fatal(err)
		}
	})
}
