// Package config loads and checks the cruzd configuration file.
//
// cruzd runs as root on every node and acts on the host's network, CRIU and
// checkpoint store, so a typo in its configuration must stop it at start-up
// with a message that says exactly what to fix, rather than let it run with a
// value the operator never meant. Hence the strictness here: unknown keys are
// errors, every value is range-checked, and all problems are reported at once
// so that fixing a file takes one round trip, not one per mistake.
package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/cruz-hpc/cruz/policy"
)

// HoldNodeArg is cruzd's hidden first argument that makes it the holder of
// a virtual node's namespaces (cruz cluster up): it only waits for SIGTERM.
// It lives here, with cruzd's configuration, so that cruzd need not link
// the virtual cluster's code to know it.
const HoldNodeArg = "--hold-node"

// CurrentVersion is the only file format version this build understands. The
// version is mandatory in files so that a future, incompatible format is
// refused outright instead of being half-understood.
const CurrentVersion = 1

// Duration exists because TOML has no duration type: operators write "90s" or
// "5m", which is clearer than a bare integer whose unit must be guessed.
type Duration struct{ time.Duration }

// UnmarshalText accepts Go duration syntax ("90s", "2m", "1h30m"). A bare
// number is refused because its unit would be ambiguous.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText drops the zero-valued trailing units of time.Duration.String,
// so that 5 minutes reads as "5m" rather than "5m0s" in files and messages.
func (d Duration) MarshalText() ([]byte, error) {
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return []byte(s), nil
}

// Config is the whole of cruzd's configuration. Keys absent from the file keep
// the values of Default, so a file only needs what differs from the defaults
// (plus the version).
type Config struct {
	Version int           `toml:"version"`
	Agent   AgentConfig   `toml:"agent"`
	Network NetworkConfig `toml:"network"`
	Store   StoreConfig   `toml:"store"`
	CRIU    CRIUConfig    `toml:"criu"`
	MPI     MPIConfig     `toml:"mpi"`
	Cluster ClusterConfig `toml:"cluster"`
	Policy  PolicyConfig  `toml:"policy"`
	Metrics MetricsConfig `toml:"metrics"`
	Output  OutputConfig  `toml:"output"`
	Status  StatusConfig  `toml:"status"`
}

// AgentConfig covers the daemon's own files. All paths are absolute because
// cruzd's working directory is whatever the service manager chose.
type AgentConfig struct {
	Socket   string `toml:"socket"`    // unix socket of the API
	RunDir   string `toml:"run_dir"`   // pods' netns bind mounts, job state
	KeyFile  string `toml:"key_file"`  // root-only secret that signs checkpoint manifests
	LogLevel string `toml:"log_level"` // debug|info|warn|error
	// Hostname, if set, is given to the agent's UTS namespace at start
	// (sethostname) and is then the node's name. Only meaningful for an
	// agent started in its own UTS namespace, as `cruz cluster up` does.
	Hostname string `toml:"hostname"`
	// Listen, if set ("IP:PORT"), is where the agent also serves its API
	// over TCP, to requests signed with the cluster key. Empty: no TCP API.
	Listen string `toml:"listen"`
	// SlurmOnly refuses users' jobs that are no Slurm step (cruz run), so
	// that on Slurm nodes every pod runs inside an allocation.
	SlurmOnly bool `toml:"slurm_only"`
	// SlurmConf is the slurm.conf the agent's scontrol reads (SLURM_CONF)
	// to ask slurmctld who owns a step and where it runs; empty: Slurm's
	// own default (or SLURM_CONF in cruzd's environment).
	SlurmConf string `toml:"slurm_conf"`
	// SlurmCgroups are the cgroups under one of which Slurm's task/cgroup
	// plugin (cgroup/v1) makes a step's cgroups, ROOT/uid_U/job_J/step_S,
	// in each hierarchy ("%n" stands for the node's name): a srun --cruz
	// step's pods join its cgroups under the first ROOT that exists, so
	// that the step's limits hold for them. Slurm uses /slurm, or
	// /slurm_NODE when built for several slurmds per host (Debian's is).
	// Empty: pods stay in the agent's cgroups.
	SlurmCgroups []string `toml:"slurm_cgroups"`
	// Nice is the agent's scheduling priority (nice value, -20 to 19). A
	// job's traffic is held while its pods are dumped and released: on a
	// busy node, an agent at the jobs' priority made every hold longer
	// (releasing 4 pods took 280 ms beside two CPU hogs). Pods and the
	// processes restored into them run at nice 0 all the same.
	Nice int `toml:"nice"`
}

// NetworkConfig describes the bridge the pods are attached to and the
// subnet of their own that their addresses come from, which must not overlap
// the networks the nodes already use.
type NetworkConfig struct {
	Bridge string `toml:"bridge"` // pod bridge in the node's netns
	Subnet string `toml:"subnet"` // IPv4 CIDR pods get addresses from
	MTU    int    `toml:"mtu"`
	// Uplink, if set, is an interface of the node's netns that cruzd
	// enslaves to the pod bridge at start, putting the pods on that LAN.
	Uplink string `toml:"uplink"`
	// Pool, if set, is the part of Subnet this node's pods get addresses
	// from (several nodes sharing one subnet each use their own pool).
	// Empty means the whole subnet.
	Pool string `toml:"pool"`
	// Address, if set (CIDR inside Subnet), is put on the pod bridge, so
	// that the node itself is a host of the pod LAN: the virtual cluster's
	// agents talk to each other on it (agent.listen).
	Address string `toml:"address"`
}

// StoreConfig locates checkpoint images and bounds what each user may keep
// there (see quota.go).
type StoreConfig struct {
	Dir string `toml:"dir"`
	// Quota is every user's share of the store in bytes (their jobs'
	// checkpoints, complete or being written); 0: no quota.
	Quota int64 `toml:"quota"`
	// UserQuotas overrides Quota for some users: "USER=BYTES" entries,
	// BYTES a number with an optional KiB, MiB, GiB or TiB (0: no quota).
	UserQuotas []string `toml:"user_quotas"`
	// MaxFileBytes bounds, per pod and checkpoint, the contents kept of
	// the files a job writes in place, so that a rollback puts them back
	// (internal/pod SaveFiles). A file over it keeps its size only.
	MaxFileBytes int64 `toml:"max_file_bytes"`
}

// MaxFileBytesLimit is the most store.max_file_bytes may be.
const MaxFileBytesLimit = 1 << 40

// CRIUConfig controls how criu is invoked for dumps and restores.
type CRIUConfig struct {
	Path     string   `toml:"path"`      // binary, or name looked up in PATH
	Timeout  Duration `toml:"timeout"`   // per dump/restore
	LogLevel int      `toml:"log_level"` // criu -v level, 0..4
}

// MPIConfig controls how ranks are launched inside pods.
type MPIConfig struct {
	Mpiexec string   `toml:"mpiexec"` // MPICH's hydra mpiexec
	Env     []string `toml:"env"`     // KEY=VALUE added to every pod of MPICH and plain jobs
	// OpenMPIMpirun is Open MPI's mpirun.
	OpenMPIMpirun string `toml:"openmpi_mpirun"`
	// OpenMPIEnv is added to every pod of Open MPI jobs (OMPI_MCA_ settings).
	OpenMPIEnv []string `toml:"openmpi_env"`
}

// OutputConfig bounds the jobs' output logs: cruzd runs as root and keeps
// every byte a job prints, so without a bound a user's job could fill the
// run directory (tmpfs by default: memory) or the store.
type OutputConfig struct {
	// MaxLogBytes is the most a job's output log (and the log of a node's
	// pods of a job coordinated elsewhere) may hold. At the bound the log
	// takes no more of the job's output: one line on the job's stderr and
	// an event say so, and the job runs on; what ends a run is still
	// logged.
	MaxLogBytes int64 `toml:"max_log_bytes"`
}

// Bounds of output.max_log_bytes.
const (
	MinLogBytes = 64 << 10
	MaxLogBytes = 1 << 40
)

// ClusterConfig names the other nodes' agents, for jobs that span nodes.
type ClusterConfig struct {
	// Peers are "NAME=IP:PORT": each node's name (its host name) and its
	// agent's agent.listen. This node may be listed too; it is skipped.
	Peers []string `toml:"peers"`
}

// ShowCommands says whose jobs' names and command lines a user sees in
// cruz status --all.
type ShowCommands string

// ShowCommands values.
const (
	// ShowCommandsOwner: a job's name and command only to its owner and root.
	ShowCommandsOwner ShowCommands = "owner"
	// ShowCommandsEveryone: every job's name and command to every user.
	ShowCommandsEveryone ShowCommands = "everyone"
)

// StatusConfig is what users see of each other's jobs.
type StatusConfig struct {
	// ShowCommands: "owner" (default) or "everyone". Other users always
	// see a job's id, owner, state, nodes and times, never its output.
	ShowCommands ShowCommands `toml:"show_commands"`
}

// ExampleMetricsListen is the address the docs and messages suggest for
// metrics.listen: loopback, for a Prometheus (or an agent of one) on the
// node itself.
const ExampleMetricsListen = "127.0.0.1:9470"

// MetricsConfig is where cruzd serves its Prometheus metrics.
type MetricsConfig struct {
	// Listen, if set ("IP:PORT"), is where GET /metrics is served, without
	// authentication: job ids and their owners' names are in the series, so
	// bind it to an address only the monitoring network reaches. Empty: no
	// metrics.
	Listen string `toml:"listen"`
}

// PolicyConfig is the cluster's default checkpoint and recovery policy for
// the jobs this agent coordinates; a job may override the interval, the
// retention and the restart mode (cruz run --interval, --keep, --restart).
type PolicyConfig struct {
	// Mode: "fixed" (every Interval), "auto" (Young/Daly from the measured
	// cost of the job's checkpoints and MTBF) or "off".
	Mode        string   `toml:"mode"`
	Interval    Duration `toml:"interval"`
	MTBF        Duration `toml:"mtbf"` // mean time between failures of one node
	MinInterval Duration `toml:"min_interval"`
	MaxInterval Duration `toml:"max_interval"`
	// MaxOverhead caps the share of a job's time its checkpoints may hold
	// it: the next checkpoint waits, whatever the interval, until the job
	// has run long enough (see policy.Config.MaxOverhead).
	MaxOverhead float64  `toml:"max_overhead"`
	Keep        int      `toml:"keep"`      // complete checkpoints kept per job
	MaxBytes    int64    `toml:"max_bytes"` // storage cap per job, 0 = none
	RetryBase   Duration `toml:"retry_base"`
	RetryMax    Duration `toml:"retry_max"`
	// Restart: "auto" (roll a failed job back to its last checkpoint, on
	// healthy nodes and spares) or "never".
	Restart       string   `toml:"restart"`
	RestartBudget int      `toml:"restart_budget"`
	RestartWindow Duration `toml:"restart_window"`
	RestartBase   Duration `toml:"restart_base"`
	RestartMax    Duration `toml:"restart_max"`
	// Heartbeat is how often a coordinator checks the nodes and pods of its
	// jobs; a node that does not answer for HeartbeatTimeout has failed.
	Heartbeat        Duration `toml:"heartbeat"`
	HeartbeatTimeout Duration `toml:"heartbeat_timeout"`
}

// PolicyValues is the [policy] section as the policy package takes it.
func (c Config) PolicyValues() policy.Config {
	p := c.Policy
	return policy.Config{
		Mode: policy.Mode(p.Mode), Interval: p.Interval.Duration, MTBF: p.MTBF.Duration,
		MinInterval: p.MinInterval.Duration, MaxInterval: p.MaxInterval.Duration, MaxOverhead: p.MaxOverhead,
		Keep: p.Keep, MaxBytes: p.MaxBytes,
		RetryBase: p.RetryBase.Duration, RetryMax: p.RetryMax.Duration,
		RestartBudget: p.RestartBudget, RestartWindow: p.RestartWindow.Duration,
		RestartBase: p.RestartBase.Duration, RestartMax: p.RestartMax.Duration,
	}
}

// Peer is one entry of cluster.peers.
type Peer struct {
	Name string
	Addr netip.AddrPort
}

// ParsePeer parses "NAME=IP:PORT".
func ParsePeer(s string) (Peer, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok || !isHostname(name) {
		return Peer{}, fmt.Errorf("%s is not \"NAME=IP:PORT\" with a node name of letters, digits, '-' and '.' (example: %s)", show(s), show("node2=10.203.0.2:7170"))
	}
	if !isListenAddr(addr) {
		return Peer{}, fmt.Errorf("%s: %s is not IP:PORT with an IP address literal and a port from 1 to 65535 (example: %s)", show(s), show(addr), show("node2=10.203.0.2:7170"))
	}
	return Peer{Name: name, Addr: netip.MustParseAddrPort(addr)}, nil
}

// PeerList returns cluster.peers parsed; invalid entries (which Validate
// rules out) are left out.
func (c Config) PeerList() []Peer {
	var out []Peer
	for _, s := range c.Cluster.Peers {
		if p, err := ParsePeer(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Default returns the configuration cruzd uses when no file is given. The MPI
// environment pins UCX and MPICH to plain TCP over the pod's eth0, because
// shared-memory and RDMA transports hold state CRIU cannot checkpoint.
//
// Every call returns fresh slices, so callers may modify the result.
func Default() Config {
	return Config{
		Version: CurrentVersion,
		Agent: AgentConfig{
			Socket:       "/run/cruz/cruzd.sock",
			RunDir:       "/run/cruz",
			KeyFile:      "/etc/cruz/cluster.key",
			LogLevel:     "info",
			Nice:         -10,
			SlurmCgroups: []string{"/slurm", "/slurm_%n"},
		},
		Network: NetworkConfig{
			Bridge: "cruz0",
			Subnet: "10.203.0.0/16",
			MTU:    1500,
		},
		Store: StoreConfig{
			Dir:          "/var/lib/cruz/checkpoints",
			UserQuotas:   []string{},
			MaxFileBytes: 8 << 20,
		},
		CRIU: CRIUConfig{
			Path:     "criu",
			Timeout:  Duration{5 * time.Minute},
			LogLevel: 4,
		},
		MPI: MPIConfig{
			// Named explicitly: Debian's Open MPI packages make plain
			// "mpiexec" Open MPI's.
			Mpiexec:       "mpiexec.hydra",
			Env:           []string{"UCX_TLS=tcp,self", "UCX_NET_DEVICES=eth0", "MPIR_CVAR_NOLOCAL=1"},
			OpenMPIMpirun: "mpirun.openmpi",
			// TCP over the pod's eth0 for mpirun<->orted and between
			// ranks (ob1 and its tcp BTL, not UCX, which would take
			// shared memory between pods of one kernel); the session
			// directory in the pod's private /dev/shm.
			OpenMPIEnv: []string{"OMPI_MCA_oob_tcp_if_include=eth0", "OMPI_MCA_btl_tcp_if_include=eth0",
				"OMPI_MCA_btl=tcp,self", "OMPI_MCA_pml=ob1", "OMPI_MCA_osc=^ucx", "OMPI_MCA_orte_tmpdir_base=/dev/shm"},
		},
		Cluster: ClusterConfig{Peers: []string{}},
		Status:  StatusConfig{ShowCommands: ShowCommandsOwner},
		Output:  OutputConfig{MaxLogBytes: 64 << 20},
		Policy: PolicyConfig{
			Mode: "fixed", Interval: Duration{10 * time.Minute}, MTBF: Duration{24 * time.Hour},
			MinInterval: Duration{30 * time.Second}, MaxInterval: Duration{6 * time.Hour}, MaxOverhead: 0.10, Keep: 3,
			RetryBase: Duration{10 * time.Second}, RetryMax: Duration{5 * time.Minute},
			Restart: "auto", RestartBudget: 3, RestartWindow: Duration{time.Hour},
			RestartBase: Duration{2 * time.Second}, RestartMax: Duration{2 * time.Minute},
			Heartbeat: Duration{time.Second}, HeartbeatTimeout: Duration{5 * time.Second},
		},
	}
}

// Load reads the file at path and returns Parse's result for it.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config file: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes data over Default and validates the result. source (usually
// the file name) prefixes every error so the operator knows which file to
// edit. On error the returned Config is the zero value, so that a half-checked
// configuration cannot be used by mistake.
func Parse(data []byte, source string) (Config, error) {
	if source == "" {
		source = "config"
	}
	// Only syntax errors can happen here: the whole document is kept as
	// one undecoded Primitive and decoded key by key below.
	var doc toml.Primitive
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", source, err)
	}
	cfg := Default()
	d := decoder{md: &md, failed: map[string]bool{}}
	d.decodeTable(reflect.ValueOf(&cfg).Elem(), nil, doc)

	if md.IsDefined("version") && !d.failed["version"] && cfg.Version != CurrentVersion {
		// A different version means a different schema: any further
		// complaint would be noise about keys this build cannot know.
		return Config{}, fmt.Errorf("%s: %w", source, versionError(cfg.Version))
	}
	errs := d.errs
	if !md.IsDefined("version") {
		errs = append([]error{fmt.Errorf("version is missing; add `version = %d` at the top of the file", CurrentVersion)}, errs...)
	}
	errs = append(errs, d.unknownKeys()...)
	errs = append(errs, cfg.validate()...)
	if len(errs) > 0 {
		for i, e := range errs {
			errs[i] = fmt.Errorf("%s: %w", source, e)
		}
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// Validate checks every value and reports all problems at once, so that
// configurations built in code get the same checks as files.
func (c Config) Validate() error {
	return errors.Join(c.validate()...)
}

// SubnetPrefix returns the parsed network.subnet. It returns the zero Prefix
// if Subnet is invalid, which Validate rules out.
func (c Config) SubnetPrefix() netip.Prefix {
	p, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// PoolPrefix returns the prefix pods take addresses from: network.pool if
// set, else the whole network.subnet. Like SubnetPrefix it returns the zero
// Prefix for invalid values, which Validate rules out.
func (c Config) PoolPrefix() netip.Prefix {
	if c.Network.Pool == "" {
		return c.SubnetPrefix()
	}
	p, err := netip.ParsePrefix(c.Network.Pool)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// examplePool is a pool inside sub for error messages: its second /24, or
// sub itself when it is that small.
func examplePool(sub netip.Prefix) string {
	if sub.Bits() >= 24 {
		return sub.String()
	}
	b := sub.Masked().Addr().As4()
	b[2]++
	return netip.PrefixFrom(netip.AddrFrom4(b), 24).Masked().String()
}

// isHostname accepts what sethostname takes and resolvers expect: up to 64
// bytes of letters, digits, '-' and '.'.
func isHostname(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] == '-' || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// isListenAddr accepts "IP:PORT" ("[IPv6]:PORT") with an IP literal, not a
// host name, and a port from 1 to 65535.
func isListenAddr(s string) bool {
	ap, err := netip.ParseAddrPort(s)
	return err == nil && ap.Port() != 0 && ap.Addr().Zone() == ""
}

// wants says, for every key, what a valid value looks like; it completes the
// sentence "<value> is not ...". Keeping it in one table keeps the type and
// range errors for a key consistent.
var wants = map[string]string{
	"version":                  fmt.Sprintf("the integer %d, the config format version this cruzd reads", CurrentVersion),
	"agent":                    "a table",
	"agent.socket":             "an absolute path of at most 107 bytes, the size limit of a unix socket address",
	"agent.run_dir":            "an absolute path",
	"agent.key_file":           "an absolute path",
	"agent.log_level":          `one of "debug", "info", "warn", "error"`,
	"agent.hostname":           `empty, or a host name: 1 to 64 letters, digits, '-' and '.'`,
	"agent.listen":             `empty, or "IP:PORT" with an IP address literal and a port from 1 to 65535`,
	"agent.nice":               "an integer from -20 to 19",
	"agent.slurm_conf":         "empty, or the absolute path of a slurm.conf",
	"agent.slurm_cgroups":      `a list of absolute cgroup paths other than "/", where "%n" stands for the node's name (Slurm's: "/slurm" or "/slurm_%n")`,
	"network":                  "a table",
	"network.bridge":           `a Linux interface name: 1 to 15 bytes, without '/', ':' or whitespace, and not "." or ".."`,
	"network.subnet":           "an IPv4 CIDR with a prefix length from 8 to 30",
	"network.mtu":              "an integer from 576 to 9000",
	"network.uplink":           `empty, or a Linux interface name other than network.bridge: 1 to 15 bytes, without '/', ':' or whitespace`,
	"network.pool":             "empty, or an IPv4 CIDR inside network.subnet, without host bits set",
	"store":                    "a table",
	"store.dir":                "an absolute path",
	"store.quota":              "a byte count, 0 (no quota) or more",
	"store.max_file_bytes":     "a byte count from 0 (keep only sizes) to 1099511627776 (1 TiB)",
	"criu":                     "a table",
	"criu.path":                "a command name looked up in PATH or an absolute path",
	"criu.timeout":             `a duration greater than zero such as "90s" or "2m"`,
	"criu.log_level":           "an integer from 0 to 4",
	"mpi":                      "a table",
	"mpi.mpiexec":              "a command name looked up in PATH or an absolute path",
	"mpi.env":                  `a list of "KEY=VALUE" strings`,
	"mpi.openmpi_mpirun":       "a command name looked up in PATH or an absolute path",
	"mpi.openmpi_env":          `a list of "KEY=VALUE" strings`,
	"network.address":          "empty, or an IPv4 CIDR inside network.subnet (the node's address on the pod LAN), not a network or broadcast address",
	"cluster":                  "a table",
	"cluster.peers":            `a list of "NAME=IP:PORT" strings, one per node agent`,
	"metrics":                  "a table",
	"metrics.listen":           `empty (no metrics), or "IP:PORT" with an IP address literal and a port from 1 to 65535`,
	"output":                   "a table",
	"output.max_log_bytes":     "a byte count from 65536 (64 KiB) to 1099511627776 (1 TiB)",
	"status":                   "a table",
	"status.show_commands":     `"owner" (a job's name and command shown to its owner and root only) or "everyone"`,
	"policy":                   "a table",
	"policy.restart":           `"auto" or "never"`,
	"policy.heartbeat":         `a duration greater than zero such as "1s"`,
	"policy.heartbeat_timeout": `a duration at least policy.heartbeat such as "5s"`,
}

func (c Config) validate() []error {
	var errs []error
	bad := func(key string, value any) {
		errs = append(errs, invalid(key, show(value)))
	}

	if c.Version != CurrentVersion {
		errs = append(errs, versionError(c.Version))
	}

	if !isAbsPath(c.Agent.Socket) || len(c.Agent.Socket) > 107 {
		bad("agent.socket", c.Agent.Socket)
	}
	if !isAbsPath(c.Agent.RunDir) {
		bad("agent.run_dir", c.Agent.RunDir)
	}
	if !isAbsPath(c.Agent.KeyFile) {
		bad("agent.key_file", c.Agent.KeyFile)
	}
	switch c.Agent.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("agent.log_level", c.Agent.LogLevel)
	}
	if c.Agent.Hostname != "" && !isHostname(c.Agent.Hostname) {
		bad("agent.hostname", c.Agent.Hostname)
	}
	if c.Agent.SlurmConf != "" && !isAbsPath(c.Agent.SlurmConf) {
		bad("agent.slurm_conf", c.Agent.SlurmConf)
	}
	for _, root := range c.Agent.SlurmCgroups {
		if !isAbsPath(root) || path.Clean(root) == "/" || path.Clean(root) != root {
			bad("agent.slurm_cgroups", c.Agent.SlurmCgroups)
			break
		}
	}
	if c.Agent.Listen != "" && !isListenAddr(c.Agent.Listen) {
		bad("agent.listen", c.Agent.Listen)
	}
	if c.Agent.Nice < -20 || c.Agent.Nice > 19 {
		bad("agent.nice", c.Agent.Nice)
	}

	if !isIfname(c.Network.Bridge) {
		bad("network.bridge", c.Network.Bridge)
	}
	if p, err := netip.ParsePrefix(c.Network.Subnet); err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
		bad("network.subnet", c.Network.Subnet)
	} else if p != p.Masked() {
		// A set host bit most likely means a mistyped subnet, and code
		// taking the prefix's address as the network's would go wrong.
		errs = append(errs, fmt.Errorf("network.subnet: %s has host bits set; write %s",
			show(c.Network.Subnet), show(p.Masked().String())))
	}
	if c.Network.MTU < 576 || c.Network.MTU > 9000 {
		bad("network.mtu", c.Network.MTU)
	}
	if c.Network.Uplink != "" && (!isIfname(c.Network.Uplink) || c.Network.Uplink == c.Network.Bridge) {
		bad("network.uplink", c.Network.Uplink)
	}
	if c.Network.Pool != "" {
		sub := c.SubnetPrefix()
		if p, err := netip.ParsePrefix(c.Network.Pool); err != nil || !p.Addr().Is4() || p != p.Masked() {
			bad("network.pool", c.Network.Pool)
		} else if sub.IsValid() && (p.Bits() < sub.Bits() || !sub.Contains(p.Addr())) {
			errs = append(errs, fmt.Errorf("network.pool: %s is not inside network.subnet %s; pick a part of the subnet (example: %s)",
				show(c.Network.Pool), show(c.Network.Subnet), show(examplePool(sub))))
		}
	}

	if c.Network.Address != "" {
		sub := c.SubnetPrefix()
		p, err := netip.ParsePrefix(c.Network.Address)
		if err != nil || !p.Addr().Is4() || p.Addr() == p.Masked().Addr() {
			bad("network.address", c.Network.Address)
		} else if sub.IsValid() && (p.Bits() != sub.Bits() || !sub.Contains(p.Addr())) {
			errs = append(errs, fmt.Errorf("network.address: %s is not inside network.subnet %s with its prefix length (example: %s)",
				show(c.Network.Address), show(c.Network.Subnet), show(netip.PrefixFrom(sub.Addr().Next(), sub.Bits()).String())))
		} else if pool := c.PoolPrefix(); c.Network.Pool != "" && pool.Contains(p.Addr()) {
			errs = append(errs, fmt.Errorf("network.address: %s is inside network.pool %s, where pod addresses come from; pick one outside it",
				show(c.Network.Address), show(c.Network.Pool)))
		}
	}
	if l := c.Metrics.Listen; l != "" && !isListenAddr(l) {
		bad("metrics.listen", l)
	} else if l != "" && l == c.Agent.Listen {
		errs = append(errs, fmt.Errorf("metrics.listen: %s is agent.listen too; serve the metrics on another port (example: %s)",
			show(l), show(ExampleMetricsListen)))
	}
	switch c.Status.ShowCommands {
	case ShowCommandsOwner, ShowCommandsEveryone:
	default:
		bad("status.show_commands", string(c.Status.ShowCommands))
	}
	seen := map[string]bool{}
	for i, s := range c.Cluster.Peers {
		p, err := ParsePeer(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster.peers[%d]: %w", i, err))
			continue
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("cluster.peers[%d]: node %s is listed twice; keep one entry per node", i, show(p.Name)))
		}
		seen[p.Name] = true
	}

	if err := c.PolicyValues().Validate(); err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			errs = append(errs, errors.New(e))
		}
	}
	switch c.Policy.Restart {
	case "auto", "never":
	default:
		bad("policy.restart", c.Policy.Restart)
	}
	if c.Policy.Heartbeat.Duration <= 0 {
		bad("policy.heartbeat", c.Policy.Heartbeat)
	}
	if c.Policy.HeartbeatTimeout.Duration < c.Policy.Heartbeat.Duration || c.Policy.HeartbeatTimeout.Duration <= 0 {
		bad("policy.heartbeat_timeout", c.Policy.HeartbeatTimeout)
	}

	if c.Output.MaxLogBytes < MinLogBytes || c.Output.MaxLogBytes > MaxLogBytes {
		bad("output.max_log_bytes", c.Output.MaxLogBytes)
	}

	if !isAbsPath(c.Store.Dir) {
		bad("store.dir", c.Store.Dir)
	}
	if c.Store.Quota < 0 {
		bad("store.quota", c.Store.Quota)
	}
	errs = append(errs, c.quotaErrors()...)
	if c.Store.MaxFileBytes < 0 || c.Store.MaxFileBytes > MaxFileBytesLimit {
		bad("store.max_file_bytes", c.Store.MaxFileBytes)
	}

	if !isCommand(c.CRIU.Path) {
		bad("criu.path", c.CRIU.Path)
	}
	if c.CRIU.Timeout.Duration <= 0 {
		bad("criu.timeout", c.CRIU.Timeout)
	}
	if c.CRIU.LogLevel < 0 || c.CRIU.LogLevel > 4 {
		bad("criu.log_level", c.CRIU.LogLevel)
	}

	if !isCommand(c.MPI.Mpiexec) {
		bad("mpi.mpiexec", c.MPI.Mpiexec)
	}
	if !isCommand(c.MPI.OpenMPIMpirun) {
		bad("mpi.openmpi_mpirun", c.MPI.OpenMPIMpirun)
	}
	for _, e := range []struct {
		key string
		env []string
	}{{"mpi.env", c.MPI.Env}, {"mpi.openmpi_env", c.MPI.OpenMPIEnv}} {
		key := e.key
		for i, kv := range e.env {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
				errs = append(errs, fmt.Errorf(`%s[%d]: %s is not a "KEY=VALUE" string with a non-empty KEY (example: %s)`,
					key, i, show(kv), show(Default().MPI.Env[0])))
			}
		}
	}
	return errs
}

func versionError(v int) error {
	return fmt.Errorf("version: %d is not supported; this cruzd reads version %d, set `version = %d`",
		v, CurrentVersion, CurrentVersion)
}

// invalid builds the standard "key: value is not <want> (example: <default>)"
// message, so that every error tells the operator what would be accepted.
func invalid(key, shown string) error {
	return fmt.Errorf("%s: %s is not %s (example: %s)", key, shown, wants[key], example(key))
}

// examples are the keys whose default is no example of a good value.
var examples = map[string]string{
	"metrics.listen": show(ExampleMetricsListen),
	// A typed string, which show would not quote.
	"status.show_commands": show(string(ShowCommandsOwner)),
}

// example renders the default of key, found through the toml tags so that it
// can never drift from Default.
func example(key string) string {
	if e, ok := examples[key]; ok {
		return e
	}
	v := reflect.ValueOf(Default())
	for _, name := range strings.Split(key, ".") {
		f, ok := fieldByTag(v.Type(), name)
		if !ok {
			return "?"
		}
		v = v.FieldByIndex(f.Index)
	}
	if v.Kind() == reflect.Struct && isSection(v.Type()) {
		return "[" + key + "] on its own line, followed by its keys"
	}
	return show(v.Interface())
}

// isAbsPath also refuses NUL bytes, which the kernel would reject only much
// later, at the first system call using the path.
func isAbsPath(p string) bool {
	return filepath.IsAbs(p) && !strings.ContainsRune(p, 0)
}

// isCommand accepts what exec.LookPath resolves predictably: a bare name
// searched in PATH, or an absolute path. A relative path with a slash would
// depend on cruzd's working directory.
func isCommand(p string) bool {
	if p == "" || strings.ContainsRune(p, 0) {
		return false
	}
	return !strings.ContainsRune(p, '/') || filepath.IsAbs(p)
}

// isIfname mirrors the kernel's dev_valid_name, so that a bad bridge name is
// caught here rather than by a netlink error when the first pod starts.
func isIfname(s string) bool {
	if len(s) == 0 || len(s) >= 16 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		// 0xa0 is whitespace to the kernel's Latin-1 isspace.
		case '/', ':', 0, ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
			return false
		}
	}
	return true
}

// show renders a value as it would be written in TOML, so that the bad value
// in a message can be found in the file. Long values are cut short to keep
// messages readable.
func show(v any) string {
	switch x := v.(type) {
	case string:
		if short, cut := truncate(x, 64); cut {
			return strconv.Quote(short) + "..."
		}
		return strconv.Quote(x)
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case float64:
		// Keep the ".0" of 1500.0, or the value would look like an integer.
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eEIN") {
			s += ".0"
		}
		return s
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case encoding.TextMarshaler:
		b, err := x.MarshalText()
		if err != nil {
			return fmt.Sprint(x)
		}
		return show(string(b))
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice {
		parts := make([]string, 0, rv.Len())
		for i := 0; i < rv.Len(); i++ {
			if i == 8 {
				parts = append(parts, "...")
				break
			}
			parts = append(parts, show(rv.Index(i).Interface()))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}

// decoder decodes one key at a time instead of the whole file at once, because
// the toml library stops at the first type error and the operator should see
// all of them. It does so by decoding into shadow structs whose fields are all
// toml.Primitive, then decoding each Primitive into the real field.
type decoder struct {
	md     *toml.MetaData
	errs   []error
	failed map[string]bool // keys whose value could not be decoded
}

var primitiveType = reflect.TypeFor[toml.Primitive]()

// shadow returns a new *struct with the fields and tags of the struct type t,
// each of type toml.Primitive. Decoding into it checks nothing but marks the
// known keys as decoded, which is what makes MetaData.Undecoded list exactly
// the unknown ones.
func shadow(t reflect.Type) reflect.Value {
	fields := make([]reflect.StructField, t.NumField())
	for i := range fields {
		f := t.Field(i)
		fields[i] = reflect.StructField{Name: f.Name, Type: primitiveType, Tag: f.Tag}
	}
	return reflect.New(reflect.StructOf(fields))
}

// isSection tells TOML tables apart from struct-typed values such as Duration.
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// decodeTable decodes the table prim, found at path, into dst, a section
// struct. A value that is not a table fails as a whole, and its keys are not
// decoded further.
func (d *decoder) decodeTable(dst reflect.Value, path toml.Key, prim toml.Primitive) {
	var raw any
	if err := d.md.PrimitiveDecode(prim, &raw); err != nil {
		d.fail(path, prim, err)
		return
	}
	if _, ok := raw.(map[string]any); !ok {
		var t notTable
		d.fail(path, prim, d.md.PrimitiveDecode(prim, &t))
		return
	}
	sh := shadow(dst.Type())
	if err := d.md.PrimitiveDecode(prim, sh.Interface()); err != nil {
		d.fail(path, prim, err)
		return
	}
	for i := 0; i < dst.NumField(); i++ {
		f := dst.Type().Field(i)
		key := append(path[:len(path):len(path)], tagName(f))
		// IsDefined is exact where the toml library matches field names
		// case-insensitively; a key that differs in case is reported as
		// unknown instead of being silently accepted.
		if !d.md.IsDefined(key...) {
			continue
		}
		p := sh.Elem().Field(i).Interface().(toml.Primitive)
		if isSection(f.Type) {
			d.decodeTable(dst.Field(i), key, p)
		} else {
			d.decodeLeaf(dst.Field(i), key, p)
		}
	}
}

// decodeLeaf decodes into a scratch value first so that a failed decode leaves
// the default in place instead of a partly written value.
func (d *decoder) decodeLeaf(dst reflect.Value, key toml.Key, prim toml.Primitive) {
	v := reflect.New(dst.Type())
	if err := d.md.PrimitiveDecode(prim, v.Interface()); err != nil {
		d.fail(key, prim, err)
		return
	}
	dst.Set(v.Elem())
}

// notTable only exists to fail: the toml library turns an Unmarshaler's
// error into a toml.ParseError carrying the line of the key, which cannot be
// had any other way. It must only be used on values that are not tables, as
// decoding a table through an Unmarshaler marks all its keys as decoded.
type notTable struct{}

func (*notTable) UnmarshalTOML(any) error { return errors.New("expected a table") }

func (d *decoder) fail(key toml.Key, prim toml.Primitive, err error) {
	var raw any
	shown := "the value"
	if d.md.PrimitiveDecode(prim, &raw) == nil {
		shown = show(raw)
	}
	k := key.String()
	d.failed[k] = true
	d.errs = append(d.errs, fmt.Errorf("%w: %w", invalid(k, shown), err))
}

// knownKeys lists every key of the schema, tables included, in file order.
func knownKeys() (keys []string, leaves map[string]bool) {
	leaves = map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			key := prefix + tagName(f)
			keys = append(keys, key)
			if isSection(f.Type) {
				walk(f.Type, key+".")
			} else {
				leaves[key] = true
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys, leaves
}

// unknownKeys reports keys the schema does not have, because a misspelt key
// would otherwise be ignored and its default silently used. Keys inside an
// unknown table, or inside a value that already failed to decode, are not
// reported again.
func (d *decoder) unknownKeys() []error {
	known, _ := knownKeys()
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k] = true
	}
	undecoded := map[string]bool{}
	for _, k := range d.md.Undecoded() {
		undecoded[k.String()] = true
	}

	var errs []error
	reported := map[string]bool{}
	for _, key := range d.md.Keys() {
		s := key.String()
		// Undecoded misses keys that the toml library matched to a field
		// ignoring case (Socket for socket); decodeTable skipped those.
		if !undecoded[s] && isKnown[s] {
			continue
		}
		skip := false
		for i := 1; i < len(key); i++ {
			parent := key[:i].String()
			if reported[parent] || d.failed[parent] {
				skip = true
				break
			}
		}
		if skip || d.failed[s] {
			continue
		}
		reported[s] = true
		msg := "unknown key " + s
		if short, cut := truncate(s, 128); cut {
			msg = "unknown key " + short + "..."
		}
		if hint := suggest(key); len(hint) > 0 {
			msg += " (did you mean " + strings.Join(hint, " or ") + "?)"
		}
		errs = append(errs, errors.New(msg))
	}
	return errs
}

// suggest finds what the operator probably meant: first a key with the same
// name in another table (a key written under the wrong header or none), then
// a key a typo or two away. Short names get one typo only, or every three
// letter key would be "near" every other.
func suggest(key toml.Key) []string {
	known, leaves := knownKeys()
	last := key[len(key)-1]
	var same []string
	for _, k := range known {
		if leaves[k] && (k == last || strings.HasSuffix(k, "."+last)) {
			same = append(same, k)
		}
	}
	if len(same) > 0 {
		return same
	}

	limit := 3 // one more than the largest distance accepted
	if len(last) <= 4 {
		limit = 2
	}
	// Compare unquoted, so that agent."log level" is near agent.log_level.
	s := strings.Join(key, ".")
	best, bestDist := "", limit
	for _, k := range known {
		if dist := editDistance(s, k, bestDist); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return nil
	}
	return []string{best}
}

// editDistance is the optimal string alignment distance between a and b, in
// bytes: Levenshtein plus transposition of adjacent bytes, the commonest
// typo. It returns limit as soon as the distance is known to reach it, since
// keys in a hostile file can be long.
func editDistance(a, b string, limit int) int {
	if abs(len(a)-len(b)) >= limit {
		return limit
	}
	// Three rows: the one before the previous is needed for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// Write prints c as a TOML config file (what `cruzd --print-config` shows).
func Write(w io.Writer, c Config) error {
	return toml.NewEncoder(w).Encode(c)
}
