package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/cruz-hpc/cruz/internal/api"
)

// ExitStopped is `cruz run`'s exit status when a checkpoint stopped the job
// (EX_TEMPFAIL: try again later, with cruz restart).
const ExitStopped = 75

// forwardedSignals are passed on to the job while a client is attached.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// Follow copies an attached job's output to stdout and stderr, forwards
// signals the client gets to the job, and returns the exit status the client
// should exit with: the job's, ExitStopped, or 1 when the run ended in error
// or the agent went away.
func Follow(ctx context.Context, c *api.Client, s *api.Stream, stdout, stderr io.Writer) int {
	return follow(ctx, s, stdout, stderr, func(id string, sig os.Signal) {
		if err := c.Signal(ctx, id, int(sig.(syscall.Signal))); err != nil {
			fmt.Fprintf(stderr, "cruz: forwarding %v to job %s: %v\n", sig, id, err)
		}
	})
}

// followAnnounced is Follow that first says on stderr which job started
// (cruz run: the user learns the id to checkpoint or attach with).
func followAnnounced(ctx context.Context, c *api.Client, s *api.Stream, stdout, stderr io.Writer) int {
	return followWith(ctx, s, stdout, stderr, notifyForwarded(), true, func(id string, sig os.Signal) {
		if err := c.Signal(ctx, id, int(sig.(syscall.Signal))); err != nil {
			fmt.Fprintf(stderr, "cruz: forwarding %v to job %s: %v\n", sig, id, err)
		}
	})
}

// follow is Follow with onSignal called, one signal at a time, for each
// signal the client gets once the job's id is known.
func follow(ctx context.Context, s *api.Stream, stdout, stderr io.Writer, onSignal func(id string, sig os.Signal)) int {
	return followSignals(ctx, s, stdout, stderr, notifyForwarded(), onSignal)
}

// notifyForwarded returns a channel that gets the signals a client passes
// on, caught from now on.
func notifyForwarded() chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	return sigs
}

// followSignals is follow with the signals from sigs (notifyForwarded),
// which may hold some that came before.
func followSignals(ctx context.Context, s *api.Stream, stdout, stderr io.Writer, sigs chan os.Signal, onSignal func(id string, sig os.Signal)) int {
	return followWith(ctx, s, stdout, stderr, sigs, false, onSignal)
}

// followWith is followSignals that, with announce, says on stderr which
// job started.
func followWith(ctx context.Context, s *api.Stream, stdout, stderr io.Writer, sigs chan os.Signal, announce bool, onSignal func(id string, sig os.Signal)) int {
	defer s.Close()
	defer signal.Stop(sigs)
	jobID := make(chan string, 1)
	go func() {
		id := <-jobID
		for sig := range sigs {
			onSignal(id, sig)
		}
	}()
	var id string
	var view progressView // a restart's restore, before the job's frames
	defer func() {
		if view != nil {
			view.end()
		}
	}()
	for {
		f, err := s.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
				fmt.Fprintf(stderr, "cruz: the agent closed the connection before job %s ended (is cruzd running?); the job may still run: cruz status %s\n", id, id)
			} else {
				fmt.Fprintf(stderr, "cruz: lost the job's stream: %v; the job may still run: cruz status %s\n", err, id)
			}
			return 1
		}
		if f.Progress == nil && view != nil {
			view.end()
			view = nil
		}
		switch {
		case f.Progress != nil:
			if view == nil {
				view = progressViewFor(stderr, false)
			}
			view.show(*f.Progress)
		case f.Job != nil:
			if id == "" {
				id = f.Job.ID
				jobID <- id
				if announce && f.Job.State != api.StateFailed {
					fmt.Fprintf(stderr, "cruz: job %s started\n", id)
				}
			}
		case f.Stream == "stdout":
			_, _ = stdout.Write(f.Data)
		case f.Stream == "stderr":
			_, _ = stderr.Write(f.Data)
		case f.Error != "":
			fmt.Fprintf(stderr, "cruz: job %s: %s\n", id, f.Error)
			if f.Exit != nil { // it failed with the program's own status
				return f.Exit.Code
			}
			return 1
		case f.Exit != nil:
			return f.Exit.Code
		case f.Stopped != nil:
			fmt.Fprintf(stderr, "cruz: job %s stopped at checkpoint %s; resume it with: cruz restart %s\n", id, f.Stopped.Checkpoint, id)
			return ExitStopped
		}
	}
}
