// Package proc reads what the tools that start and stop daemons (the
// virtual cluster, its Slurm daemons) need to know of processes from /proc.
package proc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Alive tells whether pid is a live process, not a zombie: a dead daemon
// whose parent has not reaped it yet has stopped all the same.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// Cmdline returns pid's arguments (nil if it is gone or a kernel thread).
func Cmdline(pid int) []string { return nulList(fmt.Sprintf("/proc/%d/cmdline", pid)) }

// Environ returns pid's environment as KEY=VALUE strings.
func Environ(pid int) []string { return nulList(fmt.Sprintf("/proc/%d/environ", pid)) }

func nulList(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// AwaitGone waits up to timeout (or until ctx ends) for pids to end and
// returns those left.
func AwaitGone(ctx context.Context, pids []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, pid := range pids {
			if Alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}
