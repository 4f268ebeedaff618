// Command cruzd is the Cruz node agent: it runs as root, one per node, and
// owns pods, the packet filter, CRIU and the checkpoint store. main is flags
// and wiring; the agent is package agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/cruz-hpc/cruz/agent"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/criu"
	"github.com/cruz-hpc/cruz/internal/mpi"
	"github.com/cruz-hpc/cruz/internal/pod"
	"github.com/cruz-hpc/cruz/internal/version"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// defaultConfig is read when --config is not given, if it exists; without
// it cruzd runs with the built-in defaults (cruzd --print-config shows them).
const defaultConfig = "/etc/cruz/cruzd.toml"

// Exit statuses.
const (
	exitFailed = 1 // the agent could not start, or stopped on an error
	exitUsage  = 2 // bad flags or a bad configuration
)

// init locks the main goroutine to the process's initial thread, for good.
// The agent enters pods' network namespaces (and CheckFilter a throwaway
// one) on locked threads of their own, which are discarded, not reused, if
// they cannot return (internal/pod: runOSThread). The main thread is the one
// the process is known by: /proc/<cruzd>/ns/net is its namespace, which
// tools, tests (no cruz0 bridge "there") and CRIU read. Were the main
// goroutine, and with it the main thread, ever handed to code that enters a
// namespace and failed to leave it, the whole agent would look to be in a
// pod's or a throwaway namespace (seen: tests' requireClean found "cruz0
// does not exist", and cruzd died without a word). Locked here, the main
// thread runs only main, which never leaves the host's namespaces.
func init() { runtime.LockOSThread() }

func main() {
	// Hidden first arguments: cruzd re-executed as a pod's init, as the
	// launcher of CRIU for a pod's user, as Open MPI's remote shell in a job's
	// pod, or as a virtual node's holder.
	// They come before anything else, flags included.
	if pod.IsInit(os.Args) {
		os.Exit(pod.Init())
	}
	if mpi.IsRshAgent(os.Args) {
		os.Exit(mpi.RshAgent(os.Args))
	}
	if criu.IsCRIUAs(os.Args) {
		os.Exit(criu.ExecCRIUAs(os.Args))
	}
	if len(os.Args) > 1 && os.Args[1] == config.HoldNodeArg {
		// A virtual node's namespace holder (cruz cluster up): it only
		// exists to keep the node's namespaces, until told to end.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		return
	}
	if err := agent.CloseInheritedFiles(); err != nil {
		fmt.Fprintf(os.Stderr, "cruzd: %v\n", err)
		os.Exit(exitFailed)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a problem with the command line or the configuration.
type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) int {
	var configPath string
	var printConfig, checkConfig, showVersion bool
	var manDir string
	cmd := &cobra.Command{
		Use:   "cruzd [--config FILE]",
		Short: "the Cruz node agent: checkpoint, restart and migration of MPI jobs",
		Long: `cruzd is the Cruz node agent. It runs as root, one per node, and owns the
node's pods (one network, pid, uts, ipc and mount namespace per MPI rank),
the packet filter that holds their traffic, CRIU and the checkpoint store.
Users talk to it with cruz, through its unix socket (agent.socket).

Without --config it reads ` + defaultConfig + ` if that exists, else it runs
with the built-in defaults (cruzd --print-config shows them).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected argument %q: cruzd takes only flags", args[0])}
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				fmt.Fprintln(stdout, "cruzd", version.String())
				// The CRIU the package carries, if any: used when
				// criu.path is the default and no CRIU >= 4.2 is on PATH.
				if exe, err := os.Executable(); err == nil {
					if b, ok := criu.FindBundled(exe); ok {
						v := b.Version
						if v == "" {
							v = "(version not recorded)"
						}
						fmt.Fprintf(stdout, "bundled CRIU %s at %s (used when no CRIU >= 4.2 is on PATH)\n", v, b.Wrapper)
					}
				}
				return nil
			}
			if manDir != "" {
				// make install and the packages write cruzd(8) this way.
				cmd.DisableAutoGenTag = true
				return doc.GenManTree(cmd, &doc.GenManHeader{Title: "CRUZD", Section: "8", Source: "Cruz " + version.Release, Manual: "Cruz"}, manDir)
			}
			cfg, source, err := loadConfig(configPath, cmd.Flags().Changed("config"))
			if err != nil {
				return usageError{err}
			}
			switch {
			case printConfig:
				return config.Write(stdout, cfg)
			case checkConfig:
				fmt.Fprintf(stdout, "cruzd: %s is valid\n", source)
				return nil
			}
			return serve(cfg, stderr)
		},
	}
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := cmd.Flags()
	f.StringVarP(&configPath, "config", "c", defaultConfig, "TOML config file (see configs/cruzd.toml)")
	f.BoolVar(&printConfig, "print-config", false, "print the effective config as TOML and exit")
	f.BoolVar(&checkConfig, "check-config", false, "check the config and exit, starting nothing")
	f.BoolVarP(&showVersion, "version", "V", false, "print the version and exit")
	f.StringVar(&manDir, "man", "", "write the man page cruzd.8 into this directory and exit")
	_ = f.MarkHidden("man")
	err := cmd.Execute()
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "cruzd: %v\n", ue.error)
		fmt.Fprintln(stderr, "cruzd: see cruzd --help")
		return exitUsage
	default:
		fmt.Fprintf(stderr, "cruzd: %v\n", err)
		return exitFailed
	}
}

// loadConfig reads the configuration: the file given, or the default file
// if it exists, or the built-in defaults. It returns what it read, for
// messages.
func loadConfig(path string, given bool) (config.Config, string, error) {
	if !given {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			cfg := config.Default()
			return cfg, "the built-in default configuration", cfg.Validate()
		}
	}
	cfg, err := config.Load(path)
	return cfg, path, err
}

// serve runs the agent until SIGINT or SIGTERM.
func serve(cfg config.Config, stderr io.Writer) error {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Agent.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if os.Geteuid() != 0 {
		return errors.New("must run as root (it creates namespaces and runs CRIU); users talk to it with cruz")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	err = a.Serve(ctx)
	a.Shutdown(context.Background())
	return err
}
