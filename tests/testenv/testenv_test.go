package testenv

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParseCRIUVersion(t *testing.T) {
	for _, tc := range []struct {
		out                 string
		major, minor, patch int
		ok                  bool
	}{
		{"Version: 4.2.1\n", 4, 2, 1, true},
		{"Version: 4.2\nGitID: v4.2\n", 4, 2, 0, true},
		{"Version: 3.17.1\n", 3, 17, 1, true},
		{"criu: command not found\n", 0, 0, 0, false},
	} {
		major, minor, patch, err := ParseCRIUVersion(tc.out)
		if (err == nil) != tc.ok || major != tc.major || minor != tc.minor || patch != tc.patch {
			t.Errorf("ParseCRIUVersion(%q) = %d.%d.%d, %v; want %d.%d.%d ok=%v",
				tc.out, major, minor, patch, err, tc.major, tc.minor, tc.patch, tc.ok)
		}
	}
}

func output(t *testing.T, u User, name string, args ...string) string {
	t.Helper()
	out, err := RunAs(u, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v as %s: %v: %s", name, args, u.Name, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestRunAs(t *testing.T) {
	RequireRoot(t)
	u := LookupUser(t, "cruzt1")
	if got := output(t, u, "id", "-u"); got != strconv.Itoa(int(u.UID)) {
		t.Errorf("id -u = %q, want %d", got, u.UID)
	}
	if got := output(t, u, "id", "-g"); got != strconv.Itoa(int(u.GID)) {
		t.Errorf("id -g = %q, want %d", got, u.GID)
	}
	g, err := user.LookupGroup("cruztg")
	if err != nil {
		t.Skipf("NOT RUN (supplementary groups): group cruztg missing: run `make users` as root")
	}
	if groups := strings.Fields(output(t, u, "id", "-G")); !contains(groups, g.Gid) {
		t.Errorf("id -G = %v, want it to include cruztg (%s)", groups, g.Gid)
	}
	if got := output(t, u, "sh", "-c", `echo "$HOME $USER $LOGNAME $(pwd)"`); got != u.Home+" cruzt1 cruzt1 "+u.Home {
		t.Errorf("environment = %q, want %q", got, u.Home+" cruzt1 cruzt1 "+u.Home)
	}
}

func TestTempDirFor(t *testing.T) {
	RequireRoot(t)
	u := LookupUser(t, "cruzt1")
	dir := TempDirFor(t, u)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != u.UID || sys.Gid != u.GID || st.Mode().Perm() != 0o700 {
		t.Errorf("%s: owner %d:%d mode %v, want %d:%d 0700", dir, sys.Uid, sys.Gid, st.Mode().Perm(), u.UID, u.GID)
	}
	f := filepath.Join(dir, "f")
	output(t, u, "sh", "-c", "echo hi >"+f)
	other := LookupUser(t, "cruzt2")
	if out, err := RunAs(other, "cat", f).CombinedOutput(); err == nil {
		t.Errorf("cruzt2 could read %s in cruzt1's TempDirFor: %s", f, out)
	}
}

// TestBin runs a built app as an unprivileged user, which also checks that
// $CRUZ_BIN is reachable by such users.
func TestBin(t *testing.T) {
	counter := Bin(t, "counter")
	RequireRoot(t)
	u := LookupUser(t, "cruzt2")
	if got := output(t, u, counter, "3", "0"); got != "line 1\nline 2\nline 3" {
		t.Errorf("counter 3 0 = %q", got)
	}
}

func TestRequireCRIU(t *testing.T) {
	path := RequireCRIU(t)
	t.Logf("criu: %s", path)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
