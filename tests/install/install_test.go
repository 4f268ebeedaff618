// Package install tests what an administrator installs: `make deb` builds
// the Debian packages cruz and cruz-slurm, dpkg installs them into a
// throw-away root (dpkg --root, maintainer scripts run chrootless with
// DPKG_ROOT set, so nothing of this machine changes), the files, the unit
// and the installed cruzd are checked, and dpkg removes and purges them
// again without leftovers; `make install DESTDIR=...` keeps an admin's
// config. Needs root (dpkg --root), the Go toolchain and dpkg-deb.
package install

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const repo = "../.."

// run runs name with args and returns its combined output; it fails the
// test when the command fails.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func makeEnv() []string {
	path := os.Getenv("PATH")
	if !strings.Contains(path, "/usr/local/go/bin") {
		path = "/usr/local/go/bin:" + path
	}
	return []string{"PATH=" + path}
}

func release(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "internal/version/version.go"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^const Release = "(.*)"$`).FindSubmatch(b)
	require.NotNil(t, m)
	return string(m[1])
}

// newRoot is an empty root with a dpkg database of its own.
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644))
	return root
}

// dpkg runs dpkg on root. Dependencies are forced: the root is empty (no
// libc6 or iproute2 package), and what they would pull in is this machine's.
func dpkg(t *testing.T, root string, args ...string) string {
	t.Helper()
	return run(t, nil, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--force-confold"}, args...)...)
}

func requireMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err, "installed file")
	assert.Equal(t, mode, fi.Mode().Perm(), "mode of %s", path)
	assert.True(t, fi.Mode().IsRegular(), "%s is a regular file", path)
}

// filesOutsideDpkg lists the regular files under root but dpkg's database.
func filesOutsideDpkg(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/dpkg" {
			return filepath.SkipDir
		}
		if !fi.IsDir() {
			out = append(out, rel)
		}
		return nil
	}))
	return out
}

// startAgent starts the installed cruzd with PATH path in a network and
// mount namespace of its own (its bridge, packet filter and mount changes
// vanish with them), with its socket, run directory, key and store in a
// temporary directory, waits until it serves, stops it with SIGTERM and
// returns its log.
func startAgent(t *testing.T, cruzd, path string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cruzd.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`version = 1
[agent]
socket = "%[1]s/run/cruzd.sock"
run_dir = "%[1]s/run"
key_file = "%[1]s/cluster.key"
[store]
dir = "%[1]s/store"
`, dir)), 0o644))
	var log bytes.Buffer
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", cruzd, "--config", cfg)
	cmd.Env = []string{"PATH=" + path}
	cmd.Stdout, cmd.Stderr = &log, &log
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	sock := filepath.Join(dir, "run/cruzd.sock")
	deadline := time.After(30 * time.Second)
	for serving := false; !serving; {
		select {
		case err := <-done:
			t.Fatalf("the installed cruzd ended before it served: %v\n%s", err, log.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("the installed cruzd did not serve %s within 30 s:\n%s", sock, log.String())
		case <-time.After(50 * time.Millisecond):
			fi, err := os.Stat(sock)
			serving = err == nil && fi.Mode().Type() == os.ModeSocket
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err, "cruzd ends cleanly on SIGTERM:\n%s", log.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the installed cruzd did not end within 30 s of SIGTERM:\n%s", log.String())
	}
	t.Logf("installed cruzd with PATH=%s:\n%s", path, log.String())
	return log.String()
}

func TestDebianPackages(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"dpkg-deb", "dpkg", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s is not installed", tool)
		}
	}
	t0 := time.Now()
	dist := t.TempDir()
	out := run(t, makeEnv(), "make", "-C", repo, "--no-print-directory", "deb", "DIST="+dist)
	t.Logf("make deb: %s", time.Since(t0).Round(100*time.Millisecond))
	ver := release(t)
	cruzDeb := filepath.Join(dist, "cruz_"+ver+"_amd64.deb")
	slurmDeb := filepath.Join(dist, "cruz-slurm_"+ver+"_amd64.deb")
	assert.Contains(t, out, cruzDeb, "make deb names the packages it built")
	assert.Contains(t, out, slurmDeb)
	assert.Equal(t, "cruz\n", run(t, nil, "dpkg-deb", "-f", cruzDeb, "Package"))
	assert.Equal(t, ver+"\n", run(t, nil, "dpkg-deb", "-f", cruzDeb, "Version"))
	assert.Equal(t, "cruz-slurm\n", run(t, nil, "dpkg-deb", "-f", slurmDeb, "Package"))
	assert.Contains(t, run(t, nil, "dpkg-deb", "-f", slurmDeb, "Depends"), "cruz (= "+ver+")", "the plugin goes with the same cruz")
	// cruz carries the private CRIU root it was built with and names its
	// version; it no longer asks apt for a CRIU that Debian 12 lacks.
	criuName := strings.TrimSpace(run(t, nil, "dpkg-deb", "-f", cruzDeb, "Cruz-CRIU"))
	require.Regexp(t, `^\d+\.\d+(\.\d+)?`, criuName, "the package names the CRIU it carries (Cruz-CRIU)")
	assert.NotContains(t, run(t, nil, "dpkg-deb", "-f", cruzDeb, "Recommends"), "criu")
	assert.Contains(t, run(t, nil, "dpkg-deb", "-f", cruzDeb, "Description"), "It carries CRIU "+criuName+" with its own libraries")
	assert.Equal(t, "/etc/cruz/cruzd.toml\n", run(t, nil, "sh", "-c", "dpkg-deb --ctrl-tarfile "+cruzDeb+" | tar -xOf - ./conffiles"))
	contents := run(t, nil, "dpkg-deb", "-c", cruzDeb)
	assert.NotContains(t, contents, "cruz_spank.so", "the plugin is cruz-slurm's")
	for _, l := range strings.Split(strings.TrimSpace(contents), "\n") {
		assert.Contains(t, l, " root/root ", "every file is root's: %s", l)
	}

	root := newRoot(t)
	dpkg(t, root, "-i", cruzDeb, slurmDeb)
	in := func(p string) string { return filepath.Join(root, p) }
	requireMode(t, in("usr/bin/cruz"), 0o755)
	requireMode(t, in("usr/sbin/cruzd"), 0o755)
	requireMode(t, in("usr/lib/cruz/cruz_spank.so"), 0o644)
	requireMode(t, in("etc/cruz/cruzd.toml"), 0o644)
	requireMode(t, in("lib/systemd/system/cruzd.service"), 0o644)
	requireMode(t, in("usr/share/man/man1/cruz.1.gz"), 0o644)
	requireMode(t, in("usr/share/man/man1/cruz-run.1.gz"), 0o644)
	requireMode(t, in("usr/share/man/man8/cruzd.8.gz"), 0o644)
	requireMode(t, in("usr/share/cruz/cruzd.toml.example"), 0o644)
	requireMode(t, in("usr/share/cruz/grafana-cruz.json"), 0o644)
	requireMode(t, in("usr/share/doc/cruz/admin-guide.md"), 0o644)
	example, err := os.ReadFile(filepath.Join(repo, "configs/cruzd.toml"))
	require.NoError(t, err)
	installed, err := os.ReadFile(in("etc/cruz/cruzd.toml"))
	require.NoError(t, err)
	assert.Equal(t, string(example), string(installed), "the config is the documented example")
	assert.Contains(t, run(t, nil, "sh", "-c", "zcat "+in("usr/share/man/man8/cruzd.8.gz")+" | head -3"), `.TH "CRUZD" "8"`)
	assert.Contains(t, run(t, nil, "sh", "-c", "zcat "+in("usr/share/man/man1/cruz.1.gz")+" | head -3"), `.TH "CRUZ" "1"`)

	// The installed binaries run, and the installed agent accepts the
	// installed config without starting anything.
	assert.Regexp(t, `^cruz `+regexp.QuoteMeta(ver)+` \(commit [0-9a-f]{12}`, run(t, nil, in("usr/bin/cruz"), "--version"))
	assert.Regexp(t, `^cruzd `+regexp.QuoteMeta(ver)+` \(commit [0-9a-f]{12}`, run(t, nil, in("usr/sbin/cruzd"), "--version"))
	assert.Equal(t, "cruzd: "+in("etc/cruz/cruzd.toml")+" is valid\n",
		run(t, nil, in("usr/sbin/cruzd"), "--check-config", "--config", in("etc/cruz/cruzd.toml")))

	// The CRIU the package carries runs from the installed package, through
	// its wrapper and its own loader (the throw-away root is not where the
	// package expects to be: the wrapper finds the root beside itself), is
	// >= 4.2, is the version the package names, and passes its kernel check.
	requireMode(t, in("usr/lib/cruz/criu"), 0o755)
	requireMode(t, in("usr/lib/cruz/criu-root/usr/sbin/criu"), 0o755)
	criuOut := run(t, nil, in("usr/lib/cruz/criu"), "--version")
	major, minor, patch, err := testenv.ParseCRIUVersion(criuOut)
	require.NoError(t, err, "criu --version through the installed wrapper:\n%s", criuOut)
	assert.True(t, major > 4 || major == 4 && minor >= 2, "the bundled CRIU is >= 4.2: %s", criuOut)
	upstream := fmt.Sprintf("%d.%d.%d", major, minor, patch)
	assert.True(t, strings.HasPrefix(criuName, upstream), "Cruz-CRIU %q names the CRIU that runs (%s)", criuName, upstream)
	assert.Contains(t, run(t, nil, in("usr/lib/cruz/criu"), "check"), "Looks good")
	assert.Contains(t, run(t, nil, in("usr/sbin/cruzd"), "--version"),
		"\nbundled CRIU "+strings.SplitN(criuName, " (", 2)[0])
	assert.Contains(t, run(t, nil, in("usr/sbin/cruzd"), "--version"), " at "+in("usr/lib/cruz/criu")+" (used when no CRIU >= 4.2 is on PATH)\n")

	// The installed agent starts and says which CRIU it uses: the bundled
	// one when the criu on PATH does not work (here a fake that fails), a
	// working CRIU on PATH (as a distribution's >= 4.2 would be) otherwise.
	fake := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(fake, "criu"), []byte("#!/bin/sh\necho 'criu: broken' >&2\nexit 1\n"), 0o755))
	log := startAgent(t, in("usr/sbin/cruzd"), fake+":/usr/sbin:/usr/bin:/sbin:/bin")
	assert.Contains(t, log, `msg="not using the criu on PATH: using the CRIU bundled with cruz instead" why="`+filepath.Join(fake, "criu")+` does not answer a version request`)
	assert.Regexp(t, `msg="using CRIU" version=`+regexp.QuoteMeta(upstream)+` path=`+regexp.QuoteMeta(in("usr/lib/cruz/criu"))+
		` from="bundled with cruz `+regexp.QuoteMeta(strings.SplitN(criuName, " (", 2)[0]), log)
	assert.Contains(t, log, `msg="agent ready" criu=`+upstream+` criu_from="bundled with cruz`)
	t.Run("distribution CRIU on PATH", func(t *testing.T) {
		criuPath := testenv.RequireCRIU(t)
		dir := t.TempDir()
		require.NoError(t, os.Symlink(criuPath, filepath.Join(dir, "criu")))
		log := startAgent(t, in("usr/sbin/cruzd"), dir+":/usr/sbin:/usr/bin:/sbin:/bin")
		assert.Regexp(t, `msg="using CRIU" version=\S+ path=`+regexp.QuoteMeta(filepath.Join(dir, "criu"))+` from=PATH\n`, log)
		assert.NotContains(t, log, "bundled with cruz instead")
	})

	// The plugstack line names the installed plugin and cruz.
	plug, err := os.ReadFile(in("usr/share/cruz/plugstack.conf"))
	require.NoError(t, err)
	assert.Contains(t, string(plug), "\nrequired /usr/lib/cruz/cruz_spank.so socket=/run/cruz/cruzd.sock cruz=/usr/bin/cruz\n")

	// The unit starts the installed cruzd with the installed config, and
	// systemd-analyze finds nothing wrong with it, its man pages included.
	unit, err := os.ReadFile(in("lib/systemd/system/cruzd.service"))
	require.NoError(t, err)
	assert.Contains(t, string(unit), "\nExecStart=/usr/sbin/cruzd --config /etc/cruz/cruzd.toml\n")
	assert.Contains(t, string(unit), "\nDocumentation=man:cruzd(8) man:cruz(1)\n")
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		local := strings.NewReplacer("/usr/sbin/cruzd", in("usr/sbin/cruzd"), "/etc/cruz/", in("etc/cruz")+"/").Replace(string(unit))
		p := filepath.Join(t.TempDir(), "cruzd.service")
		require.NoError(t, os.WriteFile(p, []byte(local), 0o644))
		cmd := exec.Command(analyze, "verify", p)
		cmd.Env = append(os.Environ(), "MANPATH="+in("usr/share/man"))
		vout, verr := cmd.CombinedOutput()
		var ours []string
		for _, l := range strings.Split(string(vout), "\n") {
			if strings.Contains(l, "cruzd.service") {
				ours = append(ours, l)
			}
		}
		assert.Empty(t, ours, "systemd-analyze verify: %v\n%s", verr, vout)
	} else {
		t.Log("systemd-analyze is not installed: the unit is not verified")
	}

	// An admin's config survives a reinstall (dpkg's conffile handling);
	// the key cruzd makes goes with a purge.
	mine := string(installed) + "\n# edited by the admin\n"
	require.NoError(t, os.WriteFile(in("etc/cruz/cruzd.toml"), []byte(mine), 0o644))
	require.NoError(t, os.WriteFile(in("etc/cruz/cluster.key"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	dpkg(t, root, "-i", cruzDeb)
	got, err := os.ReadFile(in("etc/cruz/cruzd.toml"))
	require.NoError(t, err)
	assert.Equal(t, mine, string(got), "a reinstall keeps the admin's config")

	// Remove: the files go, the config stays; purge: nothing is left.
	dpkg(t, root, "-r", "cruz-slurm", "cruz")
	assert.NoFileExists(t, in("usr/sbin/cruzd"))
	assert.NoFileExists(t, in("usr/lib/cruz/cruz_spank.so"))
	assert.FileExists(t, in("etc/cruz/cruzd.toml"), "remove keeps the config")
	dpkg(t, root, "-P", "cruz-slurm", "cruz")
	assert.Empty(t, filesOutsideDpkg(t, root), "a purge leaves nothing")
	assert.NoDirExists(t, in("etc/cruz"))
	assert.NotContains(t, run(t, nil, "dpkg", "--root="+root, "-l"), "ii  cruz")

	// make install into a DESTDIR keeps an admin's config there too, and
	// the unit follows PREFIX.
	dest := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dest, "etc/cruz"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dest, "etc/cruz/cruzd.toml"), []byte("version = 1\n# mine\n"), 0o644))
	out = run(t, makeEnv(), "make", "-C", repo, "--no-print-directory", "install-files", "DIST="+dist, "PREFIX=/usr/local", "DESTDIR="+dest)
	assert.Contains(t, out, "install: keeping "+dest+"/etc/cruz/cruzd.toml")
	got, err = os.ReadFile(filepath.Join(dest, "etc/cruz/cruzd.toml"))
	require.NoError(t, err)
	assert.Equal(t, "version = 1\n# mine\n", string(got))
	requireMode(t, filepath.Join(dest, "usr/local/sbin/cruzd"), 0o755)
	requireMode(t, filepath.Join(dest, "usr/local/lib/cruz/cruz_spank.so"), 0o644)
	unit, err = os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/cruzd.service"))
	require.NoError(t, err)
	assert.Contains(t, string(unit), "\nExecStart=/usr/local/sbin/cruzd --config /etc/cruz/cruzd.toml\n")
	run(t, makeEnv(), "make", "-C", repo, "--no-print-directory", "uninstall", "DIST="+dist, "PREFIX=/usr/local", "DESTDIR="+dest)
	assert.Equal(t, []string{"etc/cruz/cruzd.toml"}, filesOutsideDpkg(t, dest), "uninstall leaves only the admin's config")
	t.Logf("whole test: %s", time.Since(t0).Round(100*time.Millisecond))
}
