// Package creds compares a process's credentials with its job owner's. A
// pod may hold only processes with exactly its owner's identity and no
// capabilities: anything else (a setuid program that ran before
// no_new_privs, a forged checkpoint image) would carry privilege into a
// checkpoint, or out of one at restore, where CRIU runs as root and gives
// every task the credentials its image records. The credentials come from
// /proc/PID/status before a dump (ParseStatus) or from CRIU's images before
// a restore (internal/criu); the rule is one (Check).
package creds

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Set is one task's credentials.
type Set struct {
	UID    [4]uint32 // real, effective, saved, file system
	GID    [4]uint32 // real, effective, saved, file system
	Groups []uint32  // supplementary groups
	// Capability sets, one bit per capability.
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
}

// Owner is whom a pod's processes must be.
type Owner struct {
	UID, GID uint32
	Groups   []uint32 // the groups the pod was started with
}

// Mismatch is one field of a Set that its owner does not allow.
type Mismatch struct {
	Field string // as /proc/PID/status and this message call it: "effective uid", "CapEff"
	Got   string
	Want  string
}

func (m Mismatch) String() string { return fmt.Sprintf("%s is %s, not %s", m.Field, m.Got, m.Want) }

var idNames = [4]string{"real", "effective", "saved", "file system"}

// Check lists what in s differs from what owner allows: every uid must be
// the owner's uid and every gid its gid, the supplementary groups must be
// among the owner's, and the inheritable, permitted, effective and ambient
// capability sets must be empty. The bounding set is not checked: it only
// limits what a process could gain, and with no_new_privs and no permitted
// capabilities a pod gains nothing (pods keep the node's bounding set).
// Root's own job may hold root's capabilities: it gains nothing by them.
func Check(owner Owner, s Set) []Mismatch {
	var out []Mismatch
	for i, v := range s.UID {
		if v != owner.UID {
			out = append(out, Mismatch{Field: idNames[i] + " uid", Got: fmt.Sprint(v), Want: fmt.Sprint(owner.UID)})
		}
	}
	for i, v := range s.GID {
		if v != owner.GID {
			out = append(out, Mismatch{Field: idNames[i] + " gid", Got: fmt.Sprint(v), Want: fmt.Sprint(owner.GID)})
		}
	}
	for _, g := range s.Groups {
		if g != owner.GID && !slices.Contains(owner.Groups, g) {
			out = append(out, Mismatch{Field: "supplementary group", Got: fmt.Sprint(g), Want: "one of " + groupList(owner)})
		}
	}
	if owner.UID == 0 {
		return out
	}
	for _, c := range []struct {
		name string
		v    uint64
	}{{"CapInh", s.CapInh}, {"CapPrm", s.CapPrm}, {"CapEff", s.CapEff}, {"CapAmb", s.CapAmb}} {
		if c.v != 0 {
			out = append(out, Mismatch{Field: c.name, Got: fmt.Sprintf("%016x", c.v), Want: "0000000000000000 (no capabilities)"})
		}
	}
	return out
}

func groupList(o Owner) string {
	gs := append([]uint32{o.GID}, o.Groups...)
	slices.Sort(gs)
	gs = slices.Compact(gs)
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = fmt.Sprint(g)
	}
	return strings.Join(s, ",")
}

// Describe joins mismatches into one phrase for an error message.
func Describe(ms []Mismatch) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, "; ")
}

// ParseStatus reads the credentials from the text of /proc/PID/status.
// name is the task's command name (the Name: line).
func ParseStatus(text string) (s Set, name string, err error) {
	seen := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Name":
			name = val
		case "Uid", "Gid":
			ids, perr := parseIDs(val, 4)
			if perr != nil {
				return Set{}, name, fmt.Errorf("%s: %w", key, perr)
			}
			if key == "Uid" {
				copy(s.UID[:], ids)
			} else {
				copy(s.GID[:], ids)
			}
		case "Groups":
			ids, perr := parseIDs(val, -1)
			if perr != nil {
				return Set{}, name, fmt.Errorf("%s: %w", key, perr)
			}
			s.Groups = ids
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
			v, perr := strconv.ParseUint(val, 16, 64)
			if perr != nil {
				return Set{}, name, fmt.Errorf("%s: %w", key, perr)
			}
			*map[string]*uint64{"CapInh": &s.CapInh, "CapPrm": &s.CapPrm, "CapEff": &s.CapEff, "CapBnd": &s.CapBnd, "CapAmb": &s.CapAmb}[key] = v
		default:
			continue
		}
		seen[key] = true
	}
	// A status without these lines is not one: refuse rather than take
	// missing fields for zero (root, or no capabilities).
	for _, k := range []string{"Uid", "Gid", "CapInh", "CapPrm", "CapEff"} {
		if !seen[k] {
			return Set{}, name, fmt.Errorf("no %s line", k)
		}
	}
	return s, name, nil
}

func parseIDs(val string, want int) ([]uint32, error) {
	f := strings.Fields(val)
	if want >= 0 && len(f) != want {
		return nil, fmt.Errorf("%d ids in %q, want %d", len(f), val, want)
	}
	out := make([]uint32, len(f))
	for i, x := range f {
		v, err := strconv.ParseUint(x, 10, 32)
		if err != nil {
			return nil, err
		}
		out[i] = uint32(v)
	}
	return out, nil
}

// Caps joins a capability set stored as 32-bit words, lowest first (as
// CRIU's images keep them), into one mask. Linux has 64 bits of them; a
// bit beyond (an image made elsewhere, or forged) shows as the top bit, so
// that Check still sees a capability.
func Caps(words []uint32) uint64 {
	var v uint64
	for i, w := range words {
		switch {
		case i < 2:
			v |= uint64(w) << (32 * i)
		case w != 0:
			v |= 1 << 63
		}
	}
	return v
}
