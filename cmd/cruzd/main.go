// Command cruzd is the Cruz node agent: it runs as root, one per node, and
// owns pods, the packet filter, CRIU and the checkpoint store.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cruz-hpc/cruz/agent"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/criu"
	"github.com/cruz-hpc/cruz/internal/pod"
)

func main() {
	if pod.IsInit(os.Args) {
		os.Exit(pod.Init())
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
		os.Exit(1)
	}
	configPath := flag.String("config", "", "TOML config file (default: built-in defaults; see configs/cruzd.toml)")
	printConfig := flag.Bool("print-config", false, "print the effective config as TOML and exit")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "cruzd: unexpected argument %q (cruzd takes only flags; see cruzd -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	cfg := config.Default()
	if *configPath != "" {
		var err error
		if cfg, err = config.Load(*configPath); err != nil {
			fmt.Fprintf(os.Stderr, "cruzd: %v\n", err)
			os.Exit(2)
		}
	}
	if *printConfig {
		if err := config.Write(os.Stdout, cfg); err != nil {
			fmt.Fprintf(os.Stderr, "cruzd: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Agent.LogLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cruzd: must run as root (it creates namespaces and runs CRIU); users talk to it with cruz")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cruzd: %v\n", err)
		os.Exit(1)
	}
	err = a.Serve(ctx)
	a.Shutdown(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "cruzd: %v\n", err)
		os.Exit(1)
	}
}
