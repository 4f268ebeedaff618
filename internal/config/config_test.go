package config

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	examplePath = "../../configs/cruzd.toml"
	src         = "/etc/cruz/cruzd.toml"
)

func parse(t *testing.T, body string) (Config, error) {
	t.Helper()
	return Parse([]byte(body), src)
}

// requireErrorContains checks that err mentions every want, and that every
// line of it names the file, as operators read these messages line by line.
func requireErrorContains(t *testing.T, err error, want ...string) {
	t.Helper()
	require.Error(t, err)
	msg := err.Error()
	for _, w := range want {
		assert.Contains(t, msg, w)
	}
	for _, line := range strings.Split(msg, "\n") {
		assert.True(t, strings.HasPrefix(line, src+": "), "line without file name: %q", line)
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	require.NoError(t, c.Validate())
	assert.Equal(t, CurrentVersion, c.Version)
	assert.Equal(t, "/run/cruz/cruzd.sock", c.Agent.Socket)
	assert.Equal(t, "/run/cruz", c.Agent.RunDir)
	assert.Equal(t, "/etc/cruz/cluster.key", c.Agent.KeyFile)
	assert.Equal(t, "info", c.Agent.LogLevel)
	assert.Equal(t, "cruz0", c.Network.Bridge)
	assert.Equal(t, "10.203.0.0/16", c.Network.Subnet)
	assert.Equal(t, 1500, c.Network.MTU)
	assert.Equal(t, "/var/lib/cruz/checkpoints", c.Store.Dir)
	assert.Equal(t, "criu", c.CRIU.Path)
	assert.Equal(t, 5*time.Minute, c.CRIU.Timeout.Duration)
	assert.Equal(t, 4, c.CRIU.LogLevel)
	assert.Equal(t, "mpiexec.hydra", c.MPI.Mpiexec)
	assert.Equal(t, "mpirun.openmpi", c.MPI.OpenMPIMpirun)
	assert.Equal(t, []string{"UCX_TLS=tcp,self", "UCX_NET_DEVICES=eth0", "MPIR_CVAR_NOLOCAL=1"}, c.MPI.Env)
	assert.Equal(t, netip.MustParsePrefix("10.203.0.0/16"), c.SubnetPrefix())

	// Callers may modify what Default returns without affecting later calls.
	c.MPI.Env[0] = "X=1"
	assert.Equal(t, "UCX_TLS=tcp,self", Default().MPI.Env[0])
}

func TestExampleFileEqualsDefault(t *testing.T) {
	c, err := Load(examplePath)
	require.NoError(t, err)
	assert.Equal(t, Default(), c)

	// The example documents every key, so it must set every one of them.
	data, err := os.ReadFile(examplePath)
	require.NoError(t, err)
	var doc map[string]any
	md, err := toml.Decode(string(data), &doc)
	require.NoError(t, err)
	_, leaves := knownKeys()
	for k := range leaves {
		assert.True(t, md.IsDefined(strings.Split(k, ".")...), "example file lacks %s", k)
	}
}

func TestEncodedDefaultRoundTrips(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, toml.NewEncoder(&buf).Encode(Default()))
	c, err := Parse(buf.Bytes(), "encoded")
	require.NoError(t, err, buf.String())
	assert.Equal(t, Default(), c)
}

func TestParseOverrides(t *testing.T) {
	tests := []struct {
		name string
		body string
		want func(*Config)
	}{
		{"version only", "version = 1", func(*Config) {}},
		{"one key", "version = 1\n[network]\nmtu = 9000\n", func(c *Config) { c.Network.MTU = 9000 }},
		{"dotted keys", "version = 1\nagent.log_level = \"debug\"\ncriu.timeout = \"90s\"\n", func(c *Config) {
			c.Agent.LogLevel = "debug"
			c.CRIU.Timeout.Duration = 90 * time.Second
		}},
		{"inline table", "version = 1\nstore = { dir = \"/scratch/cruz\" }\n", func(c *Config) { c.Store.Dir = "/scratch/cruz" }},
		{"shorter env replaces the list", "version = 1\n[mpi]\nenv = [\"A=1\"]\n", func(c *Config) { c.MPI.Env = []string{"A=1"} }},
		{"empty env", "version = 1\n[mpi]\nenv = []\n", func(c *Config) { c.MPI.Env = []string{} }},
		{"env value with =", "version = 1\n[mpi]\nenv = [\"A=b=c\", \"EMPTY=\"]\n", func(c *Config) { c.MPI.Env = []string{"A=b=c", "EMPTY="} }},
		{"absolute commands", "version = 1\ncriu.path = \"/opt/criu/sbin/criu\"\nmpi.mpiexec = \"/opt/mpich/bin/mpiexec\"\n", func(c *Config) {
			c.CRIU.Path = "/opt/criu/sbin/criu"
			c.MPI.Mpiexec = "/opt/mpich/bin/mpiexec"
		}},
		{"range edges", "version = 1\n[network]\nbridge = \"br-cruz-0123456\"\nsubnet = \"192.168.4.0/30\"\nmtu = 576\n[criu]\nlog_level = 0\n", func(c *Config) {
			c.Network.Bridge = "br-cruz-0123456"
			c.Network.Subnet = "192.168.4.0/30"
			c.Network.MTU = 576
			c.CRIU.LogLevel = 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Default()
			tt.want(&want)
			got, err := parse(t, tt.body)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestParseBadValues(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"relative socket", "[agent]\nsocket = \"cruzd.sock\"", []string{`agent.socket: "cruzd.sock" is not an absolute path`, `(example: "/run/cruz/cruzd.sock")`}},
		{"long socket", "[agent]\nsocket = \"/" + strings.Repeat("s", 107) + "\"", []string{"agent.socket: ", "at most 107 bytes", "..."}},
		{"empty socket", "[agent]\nsocket = \"\"", []string{`agent.socket: "" is not an absolute path`}},
		{"relative run_dir", "[agent]\nrun_dir = \"run/cruz\"", []string{`agent.run_dir: "run/cruz" is not an absolute path (example: "/run/cruz")`}},
		{"relative key_file", "[agent]\nkey_file = \"cluster.key\"", []string{`agent.key_file: "cluster.key" is not an absolute path (example: "/etc/cruz/cluster.key")`}},
		{"NUL in key_file", "[agent]\nkey_file = \"/etc/\\u0000key\"", []string{`agent.key_file: "/etc/\x00key" is not an absolute path`}},
		{"log level", "[agent]\nlog_level = \"verbose\"", []string{`agent.log_level: "verbose" is not one of "debug", "info", "warn", "error" (example: "info")`}},
		{"log level case", "[agent]\nlog_level = \"INFO\"", []string{`agent.log_level: "INFO" is not one of`}},
		{"empty bridge", "[network]\nbridge = \"\"", []string{`network.bridge: "" is not a Linux interface name`, `(example: "cruz0")`}},
		{"long bridge", "[network]\nbridge = \"cruz0123456789ab\"", []string{`network.bridge: "cruz0123456789ab" is not a Linux interface name: 1 to 15 bytes`}},
		{"bridge with slash", "[network]\nbridge = \"cruz/0\"", []string{`network.bridge: "cruz/0" is not`}},
		{"bridge with colon", "[network]\nbridge = \"cruz:0\"", []string{`network.bridge: "cruz:0" is not`}},
		{"bridge with space", "[network]\nbridge = \"cruz 0\"", []string{`network.bridge: "cruz 0" is not`}},
		{"bridge with NBSP", "[network]\nbridge = \"cruz\\u00a0\"", []string{`network.bridge: "cruz\u00a0" is not`}},
		{"bridge dot", "[network]\nbridge = \".\"", []string{`network.bridge: "." is not`}},
		{"bridge dotdot", "[network]\nbridge = \"..\"", []string{`network.bridge: ".." is not`}},
		{"subnet prefix too long", "[network]\nsubnet = \"10.0.0.0/33\"", []string{`/etc/cruz/cruzd.toml: network.subnet: "10.0.0.0/33" is not an IPv4 CIDR with a prefix length from 8 to 30 (example: "10.203.0.0/16")`}},
		{"subnet /31", "[network]\nsubnet = \"10.0.0.0/31\"", []string{`network.subnet: "10.0.0.0/31" is not an IPv4 CIDR`}},
		{"subnet /7", "[network]\nsubnet = \"10.0.0.0/7\"", []string{`network.subnet: "10.0.0.0/7" is not an IPv4 CIDR`}},
		{"subnet IPv6", "[network]\nsubnet = \"fd00::/64\"", []string{`network.subnet: "fd00::/64" is not an IPv4 CIDR`}},
		{"subnet IPv4-mapped", "[network]\nsubnet = \"::ffff:10.0.0.0/112\"", []string{`network.subnet: "::ffff:10.0.0.0/112" is not an IPv4 CIDR`}},
		{"subnet without prefix", "[network]\nsubnet = \"10.203.0.0\"", []string{`network.subnet: "10.203.0.0" is not an IPv4 CIDR`}},
		{"subnet host bits", "[network]\nsubnet = \"10.203.7.0/16\"", []string{`network.subnet: "10.203.7.0/16" has host bits set; write "10.203.0.0/16"`}},
		{"mtu low", "[network]\nmtu = 575", []string{"network.mtu: 575 is not an integer from 576 to 9000 (example: 1500)"}},
		{"mtu high", "[network]\nmtu = 9001", []string{"network.mtu: 9001 is not an integer from 576 to 9000"}},
		{"relative store", "[store]\ndir = \"checkpoints\"", []string{`store.dir: "checkpoints" is not an absolute path (example: "/var/lib/cruz/checkpoints")`}},
		{"relative criu path", "[criu]\npath = \"bin/criu\"", []string{`criu.path: "bin/criu" is not a command name looked up in PATH or an absolute path (example: "criu")`}},
		{"empty criu path", "[criu]\npath = \"\"", []string{`criu.path: "" is not`}},
		{"zero timeout", "[criu]\ntimeout = \"0s\"", []string{`criu.timeout: "0s" is not a duration greater than zero such as "90s" or "2m" (example: "5m")`}},
		{"negative timeout", "[criu]\ntimeout = \"-1m\"", []string{`criu.timeout: "-1m" is not a duration greater than zero`}},
		{"criu log level high", "[criu]\nlog_level = 5", []string{"criu.log_level: 5 is not an integer from 0 to 4 (example: 4)"}},
		{"criu log level negative", "[criu]\nlog_level = -1", []string{"criu.log_level: -1 is not an integer from 0 to 4"}},
		{"relative mpiexec", "[mpi]\nmpiexec = \"./mpiexec\"", []string{`mpi.mpiexec: "./mpiexec" is not a command name looked up in PATH or an absolute path (example: "mpiexec.hydra")`}},
		{"env without =", "[mpi]\nenv = [\"A=1\", \"B\"]", []string{`mpi.env[1]: "B" is not a "KEY=VALUE" string with a non-empty KEY (example: "UCX_TLS=tcp,self")`}},
		{"env empty key", "[mpi]\nenv = [\"=1\"]", []string{`mpi.env[0]: "=1" is not a "KEY=VALUE" string`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(t, "version = 1\n"+tt.body+"\n")
			requireErrorContains(t, err, tt.want...)
			assert.Equal(t, Config{}, c, "a failed Parse must not return a usable Config")
		})
	}
}

func TestParseTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"mtu string", "[network]\nmtu = \"big\"", []string{
			`network.mtu: "big" is not an integer from 576 to 9000 (example: 1500)`,
			`toml: line 3 (last key "network.mtu")`,
		}},
		{"mtu float", "[network]\nmtu = 1500.0", []string{"network.mtu: 1500.0 is not an integer", "line 3"}},
		{"socket integer", "[agent]\nsocket = 1", []string{"agent.socket: 1 is not an absolute path", "line 3"}},
		{"socket table", "[agent.socket]\npath = \"/x\"", []string{"agent.socket: a table is not an absolute path"}},
		{"env string", "[mpi]\nenv = \"A=1\"", []string{`mpi.env: "A=1" is not a list of "KEY=VALUE" strings`, "line 3"}},
		{"env element", "[mpi]\nenv = [\"A=1\", 2]", []string{`mpi.env: ["A=1", 2] is not a list of "KEY=VALUE" strings`}},
		{"log level bool", "[criu]\nlog_level = true", []string{"criu.log_level: true is not an integer from 0 to 4"}},
		{"bad duration", "[criu]\ntimeout = \"5 minutes\"", []string{
			`criu.timeout: "5 minutes" is not a duration greater than zero such as "90s" or "2m" (example: "5m")`,
			`toml: line 3 (last key "criu.timeout")`, `time: unknown unit`,
		}},
		{"duration without unit", "[criu]\ntimeout = 300", []string{`criu.timeout: 300 is not a duration`, `time: missing unit`}},
		{"section not a table", "agent = 5", []string{"agent: 5 is not a table (example: [agent] on its own line, followed by its keys)", `toml: line 2 (last key "agent")`}},
		{"section array of tables", "[[store]]\ndir = \"/x\"", []string{"store: an array of tables is not a table"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, "version = 1\n"+tt.body+"\n")
			requireErrorContains(t, err, tt.want...)
			// Keys inside a value that failed are not reported again.
			assert.NotContains(t, err.Error(), "unknown key")
		})
	}

	t.Run("wraps the toml error", func(t *testing.T) {
		_, err := parse(t, "version = 1\n[criu]\ntimeout = \"soon\"\n")
		var pe toml.ParseError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, 3, pe.Position.Line)
	})
}

func TestParseUnknownKeys(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []string
		notWant []string
	}{
		{"top level transposition", "versoin = 2", []string{"unknown key versoin (did you mean version?)"}, nil},
		{"top level no suggestion", "colour = \"blue\"", []string{"unknown key colour"}, []string{"did you mean"}},
		{"short name, two typos", "[network]\nmpu = 1400\nmxx = 1", []string{"unknown key network.mpu (did you mean network.mtu?)", "unknown key network.mxx"}, []string{"network.mxx (did you mean"}},
		{"nested typo", "[agent]\nsockett = \"/x\"", []string{src + ": unknown key agent.sockett (did you mean agent.socket?)"}, nil},
		{"section typo", "[netwrok]\nmtu = 1400", []string{"unknown key netwrok (did you mean network?)"}, []string{"netwrok.mtu"}},
		{"unknown table", "[foo]\nbar = 1\nbaz = 2", []string{"unknown key foo"}, []string{"foo.bar", "foo.baz", "did you mean"}},
		{"wrong section", "[network]\nsocket = \"/x\"", []string{"unknown key network.socket (did you mean agent.socket?)"}, nil},
		{"ambiguous wrong section", "[store]\nlog_level = 2", []string{"unknown key store.log_level (did you mean agent.log_level or criu.log_level?)"}, nil},
		{"key outside its section", "mtu = 1400", []string{"unknown key mtu (did you mean network.mtu?)"}, nil},
		{"case differs", "[agent]\nSocket = \"/x\"", []string{"unknown key agent.Socket (did you mean agent.socket?)"}, nil},
		{"section case differs", "[Agent]\nsocket = \"/x\"", []string{"unknown key Agent (did you mean agent?)"}, nil},
		{"quoted key", "[agent]\n\"log level\" = \"info\"", []string{`unknown key agent."log level" (did you mean agent.log_level?)`}, nil},
		{"long key cut short", strings.Repeat("k", 200) + " = 1", []string{"unknown key " + strings.Repeat("k", 128) + "..."}, []string{strings.Repeat("k", 129)}},
		{"inside a known leaf's parent", "[criu.timeout2]\nx = 1", []string{"unknown key criu.timeout2 (did you mean criu.timeout?)"}, []string{"timeout2.x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, "version = 1\n"+tt.body+"\n")
			requireErrorContains(t, err, tt.want...)
			for _, nw := range tt.notWant {
				assert.NotContains(t, err.Error(), nw)
			}
		})
	}

	t.Run("every unknown key is named", func(t *testing.T) {
		_, err := parse(t, "version = 1\nfirst = 1\n[agent]\nsecond = 2\n[mpi]\nthird = 3\n")
		requireErrorContains(t, err, "unknown key first", "unknown key agent.second", "unknown key mpi.third")
	})
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []string
		notWant []string
	}{
		{"missing", "[network]\nmtu = 1400\n", []string{src + ": version is missing; add `version = 1` at the top of the file"}, nil},
		{"empty file", "", []string{"version is missing"}, nil},
		{"missing with other errors", "[network]\nmtu = 1\n", []string{"version is missing", "network.mtu: 1 is not"}, nil},
		{"case differs", "Version = 1\n", []string{"version is missing", "unknown key Version (did you mean version?)"}, nil},
		{"newer", "version = 2\n[network]\nmtu = 1400\n", []string{src + ": version: 2 is not supported; this cruzd reads version 1, set `version = 1`"}, nil},
		{"newer hides the rest", "version = 2\n[agent]\nnew_key = true\n[network]\nmtu = 1\n", []string{"version: 2 is not supported"}, []string{"new_key", "mtu"}},
		{"zero", "version = 0\n", []string{"version: 0 is not supported"}, nil},
		{"string", "version = \"1\"\n", []string{`version: "1" is not the integer 1`, "line 1"}, []string{"missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.body)
			requireErrorContains(t, err, tt.want...)
			for _, nw := range tt.notWant {
				assert.NotContains(t, err.Error(), nw)
			}
		})
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	_, err := parse(t, `version = 1
typo = 1
[agent]
socket = "relative.sock"
log_level = "loud"
[network]
mtu = "big"
subnet = "10.0.0.0/33"
[criu]
timeout = "forever"
`)
	requireErrorContains(t, err,
		"unknown key typo",
		"agent.socket:",
		"agent.log_level:",
		"network.mtu:",
		"network.subnet:",
		"criu.timeout:",
	)
	assert.Len(t, strings.Split(err.Error(), "\n"), 6)
}

func TestParseSyntaxError(t *testing.T) {
	_, err := parse(t, "version = 1\n[agent]\nsocket = /x\n")
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), src+": toml: line 3"), err.Error())
	var pe toml.ParseError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, 3, pe.Position.Line)

	_, err = parse(t, "version = 1\nversion = 1\n")
	requireErrorContains(t, err, "line 2")
}

func TestLoad(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.Contains(t, err.Error(), "nope.toml")
	})
	t.Run("errors name the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cruzd.toml")
		require.NoError(t, os.WriteFile(path, []byte("version = 1\n[agent]\nsockett = \"/x\"\n"), 0o600))
		_, err := Load(path)
		require.Error(t, err)
		assert.Equal(t, path+": unknown key agent.sockett (did you mean agent.socket?)", err.Error())
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"version", func(c *Config) { c.Version = 0 }, "version: 0 is not supported"},
		{"relative socket", func(c *Config) { c.Agent.Socket = "s.sock" }, `agent.socket: "s.sock" is not an absolute path`},
		{"relative run_dir", func(c *Config) { c.Agent.RunDir = "" }, `agent.run_dir: "" is not an absolute path`},
		{"relative key_file", func(c *Config) { c.Agent.KeyFile = "k" }, `agent.key_file: "k" is not an absolute path`},
		{"no output log", func(c *Config) { c.Output.MaxLogBytes = 0 }, "output.max_log_bytes: 0 is not a byte count from 65536 (64 KiB) to 1099511627776 (1 TiB) (example: 67108864)"},
		{"output log too small", func(c *Config) { c.Output.MaxLogBytes = 1000 }, "output.max_log_bytes: 1000 is not a byte count from 65536"},
		{"log level", func(c *Config) { c.Agent.LogLevel = "" }, `agent.log_level: "" is not one of`},
		{"bridge", func(c *Config) { c.Network.Bridge = "a\tb" }, `network.bridge: "a\tb" is not a Linux interface name`},
		{"subnet", func(c *Config) { c.Network.Subnet = "nonsense" }, `network.subnet: "nonsense" is not an IPv4 CIDR`},
		{"mtu", func(c *Config) { c.Network.MTU = 0 }, "network.mtu: 0 is not an integer from 576 to 9000"},
		{"store", func(c *Config) { c.Store.Dir = "." }, `store.dir: "." is not an absolute path`},
		{"negative file bound", func(c *Config) { c.Store.MaxFileBytes = -1 }, "store.max_file_bytes: -1 is not a byte count from 0 (keep only sizes) to 1099511627776 (1 TiB)"},
		{"criu path", func(c *Config) { c.CRIU.Path = "a/criu" }, `criu.path: "a/criu" is not`},
		{"timeout", func(c *Config) { c.CRIU.Timeout = Duration{} }, `criu.timeout: "0s" is not a duration greater than zero`},
		{"criu log level", func(c *Config) { c.CRIU.LogLevel = 7 }, "criu.log_level: 7 is not"},
		{"mpiexec", func(c *Config) { c.MPI.Mpiexec = "" }, `mpi.mpiexec: "" is not`},
		{"env", func(c *Config) { c.MPI.Env = append(c.MPI.Env, "NOEQUALS") }, `mpi.env[3]: "NOEQUALS" is not a "KEY=VALUE" string`},
		{"hostname", func(c *Config) { c.Agent.Hostname = "a b" }, `agent.hostname: "a b" is not empty, or a host name`},
		{"long hostname", func(c *Config) { c.Agent.Hostname = strings.Repeat("n", 65) }, `agent.hostname: "nnnn`},
		{"listen host name", func(c *Config) { c.Agent.Listen = "localhost:7070" }, `agent.listen: "localhost:7070" is not empty, or "IP:PORT"`},
		{"listen no port", func(c *Config) { c.Agent.Listen = "127.0.0.1" }, `agent.listen: "127.0.0.1" is not`},
		{"listen port 0", func(c *Config) { c.Agent.Listen = "127.0.0.1:0" }, `agent.listen: "127.0.0.1:0" is not`},
		{"listen port too big", func(c *Config) { c.Agent.Listen = "127.0.0.1:65536" }, `agent.listen: "127.0.0.1:65536" is not`},
		{"listen empty host", func(c *Config) { c.Agent.Listen = ":7070" }, `agent.listen: ":7070" is not`},
		{"uplink name", func(c *Config) { c.Network.Uplink = "eth/0" }, `network.uplink: "eth/0" is not empty, or a Linux interface name`},
		{"uplink is the bridge", func(c *Config) { c.Network.Uplink = "cruz0" }, `network.uplink: "cruz0" is not empty, or a Linux interface name other than network.bridge`},
		{"pool syntax", func(c *Config) { c.Network.Pool = "10.203.1.0" }, `network.pool: "10.203.1.0" is not empty, or an IPv4 CIDR inside network.subnet`},
		{"pool host bits", func(c *Config) { c.Network.Pool = "10.203.1.1/24" }, `network.pool: "10.203.1.1/24" is not`},
		{"pool ipv6", func(c *Config) { c.Network.Pool = "fd00::/64" }, `network.pool: "fd00::/64" is not`},
		{"pool outside subnet", func(c *Config) { c.Network.Pool = "10.204.1.0/24" },
			`network.pool: "10.204.1.0/24" is not inside network.subnet "10.203.0.0/16"; pick a part of the subnet (example: "10.203.1.0/24")`},
		{"pool wider than subnet", func(c *Config) { c.Network.Pool = "10.0.0.0/8" }, `network.pool: "10.0.0.0/8" is not inside network.subnet`},
		{"address syntax", func(c *Config) { c.Network.Address = "10.203.0.2" }, `network.address: "10.203.0.2" is not empty, or an IPv4 CIDR`},
		{"address is the network", func(c *Config) { c.Network.Address = "10.203.0.0/16" }, `network.address: "10.203.0.0/16" is not`},
		{"address outside subnet", func(c *Config) { c.Network.Address = "10.9.0.2/16" },
			`network.address: "10.9.0.2/16" is not inside network.subnet "10.203.0.0/16" with its prefix length (example: "10.203.0.1/16")`},
		{"address in pool", func(c *Config) { c.Network.Pool = "10.203.1.0/24"; c.Network.Address = "10.203.1.9/16" },
			`network.address: "10.203.1.9/16" is inside network.pool "10.203.1.0/24"`},
		{"peer without name", func(c *Config) { c.Cluster.Peers = []string{"10.203.0.2:7170"} },
			`cluster.peers[0]: "10.203.0.2:7170" is not "NAME=IP:PORT"`},
		{"peer host name", func(c *Config) { c.Cluster.Peers = []string{"node2=node2:7170"} },
			`cluster.peers[0]: "node2=node2:7170": "node2:7170" is not IP:PORT`},
		{"peer twice", func(c *Config) { c.Cluster.Peers = []string{"n2=10.203.0.2:7170", "n2=10.203.0.3:7170"} },
			`cluster.peers[1]: node "n2" is listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Len(t, strings.Split(err.Error(), "\n"), 1, "only the mutated key is wrong")
		})
	}
}

func TestParseClusterNodeKeys(t *testing.T) {
	c, err := parse(t, "version = 1\n[agent]\nhostname = \"node3\"\n[network]\nuplink = \"eth0\"\npool = \"10.203.3.0/24\"\n")
	require.NoError(t, err)
	assert.Equal(t, "node3", c.Agent.Hostname)
	assert.Equal(t, "eth0", c.Network.Uplink)
	assert.Equal(t, netip.MustParsePrefix("10.203.3.0/24"), c.PoolPrefix())
	assert.Equal(t, netip.MustParsePrefix("10.203.0.0/16"), c.SubnetPrefix())

	// Defaults: no host name, no uplink, the pool is the whole subnet.
	d := Default()
	assert.Empty(t, d.Agent.Hostname)
	assert.Empty(t, d.Network.Uplink)
	assert.Empty(t, d.Network.Pool)
	assert.Equal(t, d.SubnetPrefix(), d.PoolPrefix())

	// agent.listen: IPv4 or IPv6 literal with a port; empty by default.
	assert.Empty(t, d.Agent.Listen)
	for _, ok := range []string{"127.0.0.1:7070", "0.0.0.0:1", "[::1]:65535", "10.0.0.5:443"} {
		c, err := parse(t, fmt.Sprintf("version = 1\n[agent]\nlisten = %q\n", ok))
		require.NoError(t, err, ok)
		assert.Equal(t, ok, c.Agent.Listen)
	}
	_, err = parse(t, "version = 1\n[agent]\nlisten = \"node1:7070\"\n")
	requireErrorContains(t, err, `agent.listen: "node1:7070" is not empty, or "IP:PORT" with an IP address literal and a port from 1 to 65535 (example: "")`)
	_, err = parse(t, "version = 1\n[agent]\nlisten = 7070\n")
	requireErrorContains(t, err, "agent.listen: 7070 is not")

	// metrics.listen: like agent.listen, off by default, never the API's port.
	assert.Empty(t, d.Metrics.Listen)
	for _, ok := range []string{"127.0.0.1:9470", "0.0.0.0:9470", "[::1]:9470"} {
		c, err := parse(t, fmt.Sprintf("version = 1\n[metrics]\nlisten = %q\n", ok))
		require.NoError(t, err, ok)
		assert.Equal(t, ok, c.Metrics.Listen)
	}
	for _, bad := range []string{`"localhost:9470"`, `":9470"`, `"127.0.0.1"`, `"127.0.0.1:0"`, `"127.0.0.1:70000"`, `"http://127.0.0.1:9470/metrics"`, "9470"} {
		_, err = parse(t, "version = 1\n[metrics]\nlisten = "+bad+"\n")
		requireErrorContains(t, err, "metrics.listen: "+bad+` is not empty (no metrics), or "IP:PORT" with an IP address literal and a port from 1 to 65535 (example: "127.0.0.1:9470")`)
	}
	_, err = parse(t, "version = 1\nagent.listen = \"10.0.0.5:7170\"\nmetrics.listen = \"10.0.0.5:7170\"\n")
	requireErrorContains(t, err, `metrics.listen: "10.0.0.5:7170" is agent.listen too; serve the metrics on another port (example: "127.0.0.1:9470")`)
	_, err = parse(t, "version = 1\n[metrics]\nlisen = \"127.0.0.1:9470\"\n")
	requireErrorContains(t, err, "unknown key metrics.lisen (did you mean metrics.listen?)")

	// status.show_commands: owner by default, or everyone.
	assert.Equal(t, ShowCommandsOwner, d.Status.ShowCommands)
	c, err = parse(t, "version = 1\n[status]\nshow_commands = \"everyone\"\n")
	require.NoError(t, err)
	assert.Equal(t, ShowCommandsEveryone, c.Status.ShowCommands)
	_, err = parse(t, "version = 1\n[status]\nshow_commands = \"all\"\n")
	requireErrorContains(t, err, `status.show_commands: "all" is not "owner" (a job's name and command shown to its owner and root only) or "everyone" (example: "owner")`)

	// The pool may be the subnet itself.
	_, err = parse(t, "version = 1\nnetwork.pool = \"10.203.0.0/16\"\n")
	require.NoError(t, err)

	// A node of a virtual cluster: its address on the pod LAN and its peers.
	c, err = parse(t, "version = 1\n[network]\npool = \"10.203.2.0/24\"\naddress = \"10.203.0.2/16\"\n[cluster]\npeers = [\"node1=10.203.0.1:7170\", \"node2=10.203.0.2:7170\"]\n")
	require.NoError(t, err)
	assert.Equal(t, []Peer{{"node1", netip.MustParseAddrPort("10.203.0.1:7170")}, {"node2", netip.MustParseAddrPort("10.203.0.2:7170")}}, c.PeerList())
	_, err = parse(t, "version = 1\n[cluster]\npeer = []\n")
	requireErrorContains(t, err, "cluster.peer")

	// The error names the file and the key.
	_, err = parse(t, "version = 1\n[network]\nsubnet = \"192.168.0.0/24\"\npool = \"10.203.1.0/24\"\n")
	requireErrorContains(t, err, `network.pool: "10.203.1.0/24" is not inside network.subnet "192.168.0.0/24"`)
	_, err = parse(t, "version = 1\nnetwork.uplink = 7\n")
	requireErrorContains(t, err, "network.uplink: 7 is not")
}

func TestSubnetPrefix(t *testing.T) {
	c := Default()
	c.Network.Subnet = "192.168.0.0/24"
	assert.Equal(t, netip.MustParsePrefix("192.168.0.0/24"), c.SubnetPrefix())
	c.Network.Subnet = "bogus"
	assert.False(t, c.SubnetPrefix().IsValid())
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"5m", 5 * time.Minute, "5m"},
		{"90s", 90 * time.Second, "1m30s"},
		{"1h", time.Hour, "1h"},
		{"1h0m30s", time.Hour + 30*time.Second, "1h0m30s"},
		{"2h30m", 150 * time.Minute, "2h30m"},
		{"1500ms", 1500 * time.Millisecond, "1.5s"},
		{"0s", 0, "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			require.NoError(t, d.UnmarshalText([]byte(tt.in)))
			assert.Equal(t, tt.want, d.Duration)
			out, err := d.MarshalText()
			require.NoError(t, err)
			assert.Equal(t, tt.out, string(out))

			var back Duration
			require.NoError(t, back.UnmarshalText(out))
			assert.Equal(t, d, back)
		})
	}

	for _, bad := range []string{"", "5", "five minutes", "5 m"} {
		var d Duration
		assert.Error(t, d.UnmarshalText([]byte(bad)), "%q", bad)
	}
}

func TestEditDistance(t *testing.T) {
	assert.Equal(t, 0, editDistance("abc", "abc", 3))
	assert.Equal(t, 1, editDistance("agent.sockett", "agent.socket", 3))
	assert.Equal(t, 1, editDistance("versoin", "version", 3), "a transposition is one edit")
	assert.Equal(t, 2, editDistance("mtu", "mpi", 3))
	assert.Equal(t, 3, editDistance("colour", "agent", 3), "capped at the limit")
	assert.Equal(t, 3, editDistance(strings.Repeat("x", 1000), "mtu", 3))
}

// FuzzParse checks that no input makes Parse panic; that what it refuses is
// refused with an error naming the file and no configuration; and that
// what it accepts is valid and is printed by Write (cruzd --print-config) as
// a file that parses to the same configuration. `make fuzz` runs it.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	require.NoError(f, err)
	f.Add(example)
	var def bytes.Buffer
	require.NoError(f, Write(&def, Default()))
	f.Add(def.Bytes())
	for _, seed := range []string{
		"",
		"version = 1",
		"version = 2\nfoo = 1",
		"version = 1\nagent = 5\n[[store]]\ndir = 1",
		"version = 1\n[network]\nmtu = \"big\"\nsubnet = \"10.0.0.0/33\"",
		"version = 1\n[criu]\ntimeout = 300\n[mpi]\nenv = [1, [2], {a = 3}]",
		"version = 1\n[agent.socket.x]\ny = 1\n[Agent]\nSOCKET = 1",
		"version = 1\n[agent\n",
		"version = 1\n[agent]\nlisten = \"10.0.0.1:7170\"\nlog_level = \"debug\"\n",
		"version = 1\n[network]\nsubnet = \"10.9.0.0/16\"\npool = \"10.9.1.0/24\"\naddress = \"10.9.0.1/16\"\n",
		"version = 1\n[cluster]\npeers = [\"node1=10.0.0.1:7170\", \"node2=10.0.0.2:7170\"]\n",
		"version = 1\n[criu]\ntimeout = \"30s\"\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml: ") {
				t.Fatalf("the error does not name the file: %v", err)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Fatalf("refused, but a configuration came back: %+v", c)
			}
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("Parse accepted an invalid config: %v\n%q", verr, data)
		}
		if !c.SubnetPrefix().IsValid() {
			t.Fatalf("Parse accepted subnet %q", c.Network.Subnet)
		}
		var out bytes.Buffer
		if err := Write(&out, c); err != nil {
			t.Fatalf("accepted, but Write fails: %v", err)
		}
		again, err := Parse(out.Bytes(), "printed.toml")
		if err != nil {
			t.Fatalf("the printed configuration is refused: %v\n%s", err, out.String())
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("printed and parsed again, the configuration changed:\nfirst:  %+v\nsecond: %+v\nprinted:\n%s", c, again, out.String())
		}
	})
}
