// Package testenv holds the helpers that Cruz's end-to-end tests share: where
// the built binaries are, what the test needs from the machine (root, CRIU),
// and running commands as the unprivileged test users.
//
// A test whose requirements are missing is skipped with a message that says
// so plainly and how to get them (`make test` as root provides all of them),
// so that a run with skips is never mistaken for a full pass.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// MinCRIU is the oldest CRIU that Cruz supports (older ones cannot dump TCP
// sockets on current kernels).
var MinCRIU = [2]int{4, 2}

// Bin returns the path of a binary built by `make build`: $CRUZ_BIN/name
// (cruz, cruzd) or $CRUZ_BIN/apps/name (the C test programs). Without
// CRUZ_BIN the test is skipped; with CRUZ_BIN set but the binary missing it
// fails, since that is a broken build.
func Bin(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("CRUZ_BIN")
	if dir == "" {
		t.Skipf("NOT RUN: CRUZ_BIN not set: run `make test` (builds the binaries into /opt/cruz/bin and sets it), "+
			"or `make build` and CRUZ_BIN=/opt/cruz/bin go test ... (needs %s)", name)
	}
	if !filepath.IsAbs(dir) {
		t.Fatalf("CRUZ_BIN=%q must be an absolute path (go test runs each package in its own directory)", dir)
	}
	for _, p := range []string{filepath.Join(dir, name), filepath.Join(dir, "apps", name)} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("binary %q not found in CRUZ_BIN=%s nor %s/apps: run `make build`", name, dir, dir)
	return ""
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("NOT RUN: needs root (euid is %d): run `make test` as root", os.Geteuid())
	}
}

var criuVersionRE = regexp.MustCompile(`(?m)^Version:\s*(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseCRIUVersion reads major, minor and patch from the output of
// `criu --version` ("Version: 4.2.1" or "Version: 4.2").
func ParseCRIUVersion(out string) (major, minor, patch int, err error) {
	m := criuVersionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("no \"Version: X.Y\" line in criu --version output %q", out)
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		patch, _ = strconv.Atoi(m[3])
	}
	return major, minor, patch, nil
}

// RequireCRIU returns the path of a CRIU >= 4.2 ($CRUZ_CRIU, else criu on
// PATH, else /usr/local/sbin/criu where scripts/install-deps.sh puts it), or
// skips the test when there is none.
func RequireCRIU(t testing.TB) string {
	t.Helper()
	name := os.Getenv("CRUZ_CRIU")
	if name == "" {
		name = "criu"
	}
	path, err := exec.LookPath(name)
	if err != nil && name == "criu" {
		if _, serr := os.Stat("/usr/local/sbin/criu"); serr == nil {
			path, err = "/usr/local/sbin/criu", nil
		}
	}
	if err != nil {
		t.Skipf("NOT RUN: CRIU not found (%v): run `make deps` as root (installs CRIU >= %d.%d), or set CRUZ_CRIU",
			err, MinCRIU[0], MinCRIU[1])
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		t.Skipf("NOT RUN: `%s --version` failed: %v: %s (run `make deps` as root)", path, err, strings.TrimSpace(string(out)))
	}
	major, minor, patch, err := ParseCRIUVersion(string(out))
	if err != nil {
		t.Skipf("NOT RUN: %s: %v", path, err)
	}
	if major < MinCRIU[0] || (major == MinCRIU[0] && minor < MinCRIU[1]) {
		t.Skipf("NOT RUN: %s is CRIU %d.%d.%d, need >= %d.%d: run `make deps` as root",
			path, major, minor, patch, MinCRIU[0], MinCRIU[1])
	}
	return path
}

// User is an account the tests run jobs as.
type User struct {
	Name     string
	UID, GID uint32
	Groups   []uint32 // every group the user is in, the primary one included
	Home     string
}

// LookupUser returns the test user name (cruzt1 or cruzt2, made by
// `make users`), or skips the test when the account does not exist.
func LookupUser(t testing.TB, name string) User {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("NOT RUN: test user %q missing (%v): run `make users` as root", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		t.Fatalf("user %s: uid %q: %v", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		t.Fatalf("user %s: gid %q: %v", name, u.Gid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		t.Fatalf("user %s: groups: %v", name, err)
	}
	groups := make([]uint32, 0, len(ids))
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			t.Fatalf("user %s: group id %q: %v", name, s, err)
		}
		groups = append(groups, uint32(g))
	}
	return User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Groups: groups, Home: u.HomeDir}
}

// RunAs returns a command that runs as u: its uid, primary gid and groups,
// with HOME, USER and LOGNAME set for u (the rest of the environment is
// inherited, less XDG_RUNTIME_DIR and MAIL, which belong to the caller) and
// u's home as working directory when it exists (set Dir to change it).
// The caller must be root.
func RunAs(u User, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: append([]uint32(nil), u.Groups...)},
	}
	env := make([]string, 0, len(os.Environ())+3)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "USER", "LOGNAME", "XDG_RUNTIME_DIR", "MAIL":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "HOME="+u.Home, "USER="+u.Name, "LOGNAME="+u.Name)
	if st, err := os.Stat(u.Home); err == nil && st.IsDir() {
		cmd.Dir = u.Home
	}
	return cmd
}

// TempDirFor makes a fresh directory under /tmp (reachable by every user,
// unlike t.TempDir() under a 0700 TMPDIR or /root), owned by u with mode
// 0700, and removes it when the test ends.
func TempDirFor(t testing.TB, u User) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cruz-test-"+u.Name+"-")
	if err != nil {
		t.Fatalf("TempDirFor(%s): %v", u.Name, err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("TempDirFor(%s): cleanup: %v", u.Name, err)
		}
	})
	if err := os.Chown(dir, int(u.UID), int(u.GID)); err != nil {
		t.Fatalf("TempDirFor(%s): chown %s: %v", u.Name, dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatalf("TempDirFor(%s): chmod %s: %v", u.Name, dir, err)
	}
	return dir
}
