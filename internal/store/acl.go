package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// POSIX ACL xattr format (linux/posix_acl_xattr.h): a little-endian header
// {u32 version=2} followed by entries {u16 tag, u16 perm, u32 id}, sorted by
// tag then id.
const (
	aclXattrAccess  = "system.posix_acl_access"
	aclXattrDefault = "system.posix_acl_default"
	aclVersion      = 2

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclUndefinedID = 0xffffffff

	aclRead  = 4
	aclWrite = 2
	aclExec  = 1
)

type aclEntry struct {
	Tag  uint16
	Perm uint16
	ID   uint32
}

// encodeACL returns the xattr value for entries, sorted by tag then id.
func encodeACL(entries []aclEntry) []byte {
	es := slices.Clone(entries)
	slices.SortFunc(es, func(a, b aclEntry) int {
		if a.Tag != b.Tag {
			return int(a.Tag) - int(b.Tag)
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	b := make([]byte, 4, 4+8*len(es))
	binary.LittleEndian.PutUint32(b, aclVersion)
	for _, e := range es {
		b = binary.LittleEndian.AppendUint16(b, e.Tag)
		b = binary.LittleEndian.AppendUint16(b, e.Perm)
		b = binary.LittleEndian.AppendUint32(b, e.ID)
	}
	return b
}

// decodeACL parses an ACL xattr value.
func decodeACL(b []byte) ([]aclEntry, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 {
		return nil, fmt.Errorf("ACL xattr of %d bytes: malformed", len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != aclVersion {
		return nil, fmt.Errorf("ACL xattr version %d, want %d", v, aclVersion)
	}
	var es []aclEntry
	for p := b[4:]; len(p) > 0; p = p[8:] {
		es = append(es, aclEntry{
			Tag:  binary.LittleEndian.Uint16(p),
			Perm: binary.LittleEndian.Uint16(p[2:]),
			ID:   binary.LittleEndian.Uint32(p[4:]),
		})
	}
	return es, nil
}

// ownerACL is the access ACL of checkpoint files (dir=false) and directories:
// root rw(x), the job owner r(-x), nobody else anything.
func ownerACL(uid uint32, dir bool) []byte {
	rootPerm, userPerm := uint16(aclRead|aclWrite), uint16(aclRead)
	if dir {
		rootPerm, userPerm = aclRead|aclWrite|aclExec, aclRead|aclExec
	}
	return encodeACL([]aclEntry{
		{aclUserObj, rootPerm, aclUndefinedID},
		{aclUser, userPerm, uid},
		{aclGroupObj, 0, aclUndefinedID},
		{aclMask, userPerm, aclUndefinedID},
		{aclOther, 0, aclUndefinedID},
	})
}

// Hooks for tests (to simulate a filesystem without ACL support).
var fsetxattr = unix.Fsetxattr

// perms applies ownership, mode and ACL to the files and directories of one
// checkpoint. If the filesystem has no ACL support it falls back to root-only
// modes and records a warning (once).
type perms struct {
	owner  Owner
	root   string
	isRoot bool

	mu       sync.Mutex
	aclOff   bool
	warnings []string
}

func newPerms(owner Owner, root string) *perms {
	return &perms{owner: owner, root: root, isRoot: os.Geteuid() == 0}
}

func (p *perms) aclDisabled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.aclOff
}

func (p *perms) disableACL(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aclOff {
		return
	}
	p.aclOff = true
	p.warnings = append(p.warnings, fmt.Sprintf(
		"the filesystem of %s does not support POSIX ACLs (%v): checkpoints are readable by root only, so the job owner (uid %d) cannot read its images",
		p.root, err, p.owner.UID))
}

func (p *perms) Warnings() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.warnings)
}

func ignorableXattrErr(err error) bool {
	return errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP)
}

// apply makes the open file or directory f root-owned, mode 0600/0700, with
// the owner's read ACL. A directory also loses any default ACL it inherited.
func (p *perms) apply(f *os.File, dir bool) error {
	fd := int(f.Fd())
	name := f.Name()
	if p.isRoot {
		if err := unix.Fchown(fd, 0, 0); err != nil {
			return fmt.Errorf("chown root %s: %w", name, err)
		}
	}
	mode := uint32(0o600)
	if dir {
		mode = 0o700
		if err := unix.Fremovexattr(fd, aclXattrDefault); err != nil && !ignorableXattrErr(err) {
			return fmt.Errorf("remove default ACL of %s: %w", name, err)
		}
	}
	if p.owner.UID == 0 || p.aclDisabled() {
		// Root-only: drop any inherited access ACL, then set the mode.
		if err := unix.Fremovexattr(fd, aclXattrAccess); err != nil && !ignorableXattrErr(err) {
			return fmt.Errorf("remove ACL of %s: %w", name, err)
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod %s: %w", name, err)
		}
		return nil
	}
	// chmod first: on a file with an ACL, chmod rewrites the mask, so the ACL
	// must be set after it.
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	err := fsetxattr(fd, aclXattrAccess, ownerACL(p.owner.UID, dir), 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.EOPNOTSUPP):
		p.disableACL(err)
	default:
		return fmt.Errorf("set ACL of %s: %w", name, err)
	}
	return nil
}
