package creds

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const userStatus = `Name:	counter
Umask:	0022
State:	S (sleeping)
Uid:	1001	1001	1001	1001
Gid:	1001	1001	1001	1001
Groups:	1001 1003 
NoNewPrivs:	1
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
`

var owner = Owner{UID: 1001, GID: 1001, Groups: []uint32{1001, 1003}}

func TestParseStatusOwnUser(t *testing.T) {
	s, name, err := ParseStatus(userStatus)
	require.NoError(t, err)
	assert.Equal(t, "counter", name)
	assert.Equal(t, [4]uint32{1001, 1001, 1001, 1001}, s.UID)
	assert.Equal(t, []uint32{1001, 1003}, s.Groups)
	assert.Equal(t, uint64(0x1ffffffffff), s.CapBnd)
	assert.Empty(t, Check(owner, s), "the owner's own process, with the node's bounding set, passes")
}

// A setuid-root program run without no_new_privs: effective and saved uid
// 0, and root's capabilities.
func TestCheckSetuidRoot(t *testing.T) {
	st := `Name:	suid-cat
Uid:	1001	0	0	0
Gid:	1001	1001	1001	1001
Groups:	1001
CapInh:	0000000000000000
CapPrm:	000001ffffffffff
CapEff:	000001ffffffffff
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
`
	s, name, err := ParseStatus(st)
	require.NoError(t, err)
	assert.Equal(t, "suid-cat", name)
	ms := Check(owner, s)
	var fields []string
	for _, m := range ms {
		fields = append(fields, m.Field)
	}
	assert.Equal(t, []string{"effective uid", "saved uid", "file system uid", "CapPrm", "CapEff"}, fields)
	assert.Equal(t, "effective uid is 0, not 1001", ms[0].String())
	assert.Contains(t, Describe(ms), "CapEff is 000001ffffffffff, not 0000000000000000 (no capabilities)")
}

func TestCheckEachField(t *testing.T) {
	base := Set{UID: [4]uint32{1001, 1001, 1001, 1001}, GID: [4]uint32{1001, 1001, 1001, 1001}, Groups: []uint32{1003}}
	for _, c := range []struct {
		field string
		edit  func(*Set)
	}{
		{"real uid", func(s *Set) { s.UID[0] = 1002 }},
		{"saved uid", func(s *Set) { s.UID[2] = 0 }},
		{"effective gid", func(s *Set) { s.GID[1] = 0 }},
		{"file system gid", func(s *Set) { s.GID[3] = 42 }},
		{"supplementary group", func(s *Set) { s.Groups = append(s.Groups, 0) }},
		{"CapInh", func(s *Set) { s.CapInh = 1 }},
		{"CapPrm", func(s *Set) { s.CapPrm = 1 << 21 }},
		{"CapEff", func(s *Set) { s.CapEff = 1 << 1 }},
		{"CapAmb", func(s *Set) { s.CapAmb = 1 << 12 }},
	} {
		s := base
		s.Groups = append([]uint32(nil), base.Groups...)
		c.edit(&s)
		ms := Check(owner, s)
		require.Len(t, ms, 1, c.field)
		assert.Equal(t, c.field, ms[0].Field)
	}
	assert.Empty(t, Check(owner, base))
	// Fewer groups than the owner's is no privilege.
	base.Groups = nil
	assert.Empty(t, Check(owner, base))
	// The bounding set alone is not checked.
	base.CapBnd = ^uint64(0)
	assert.Empty(t, Check(owner, base))
}

func TestParseStatusRefusesIncomplete(t *testing.T) {
	for _, st := range []string{
		"",
		"Name:\tx\nGid:\t1 1 1 1\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\n",
		"Uid:\t1 1 1\nGid:\t1 1 1 1\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\n",
		"Uid:\t1 1 1 x\nGid:\t1 1 1 1\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\n",
		"Uid:\t1 1 1 1\nGid:\t1 1 1 1\nCapInh:\tzz\nCapPrm:\t0\nCapEff:\t0\n",
	} {
		_, _, err := ParseStatus(st)
		assert.Error(t, err, "%q", st)
	}
}

func TestParseStatusSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	s, _, err := ParseStatus(string(b))
	require.NoError(t, err)
	assert.Equal(t, uint32(os.Getuid()), s.UID[0])
	assert.Equal(t, uint32(os.Getegid()), s.GID[1])
}

func TestCaps(t *testing.T) {
	assert.Equal(t, uint64(0), Caps(nil))
	assert.Equal(t, uint64(0x1ffffffffff), Caps([]uint32{0xffffffff, 0x1ff}))
	assert.Equal(t, uint64(1)<<63, Caps([]uint32{0, 0, 1}), "a bit beyond 64 counts as a capability")
}

func TestCheckRootJob(t *testing.T) {
	root := Set{CapPrm: 0x1ffffffffff, CapEff: 0x1ffffffffff}
	assert.Empty(t, Check(Owner{}, root), "root's job may keep root's capabilities")
	root.UID[1] = 1001
	assert.Len(t, Check(Owner{}, root), 1, "but not another identity")
}
