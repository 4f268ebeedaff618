package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SetNice gives every thread of this process the nice value n. Linux keeps
// a nice value per thread (setpriority on PID 0 changes the calling thread
// only), and a new thread starts with its creator's: after this, threads
// the Go runtime makes later have n too.
func SetNice(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list this process's threads: %w", err)
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread that ended meanwhile (ESRCH) needs nothing.
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("set the nice value of thread %d to %d: %w", tid, n, err))
		}
	}
	return errors.Join(errs...)
}

// Nice is the nice value of process pid (field 19 of /proc/PID/stat).
func Nice(pid int) (int, error) { return niceAt(fmt.Sprintf("/proc/%d/stat", pid)) }

func niceAt(path string) (int, error) {
	f, err := statFields(path)
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which ends at the last ')': state
	// is field 3, nice field 19.
	if len(f) < 17 {
		return 0, fmt.Errorf("%s: %d fields after the command name, want at least 17", path, len(f))
	}
	return strconv.Atoi(f[16])
}

// StartTime is when process pid started, in clock ticks after boot (field
// 22 of /proc/PID/stat). A PID can be reused once its process is reaped; the
// PID and its start time together name one process for the life of the
// machine.
func StartTime(pid int) (uint64, error) { return startTimeAt(fmt.Sprintf("/proc/%d/stat", pid)) }

func startTimeAt(path string) (uint64, error) {
	f, err := statFields(path)
	if err != nil {
		return 0, err
	}
	// Field 3 (the state) is f[0]: starttime, field 22, is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("%s: %d fields after the command name, want at least 20", path, len(f))
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: start time: %w", path, err)
	}
	return v, nil
}

// statFields are the fields of a /proc stat file after the command name
// (which may hold spaces and parentheses), from the state on.
func statFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("%s: no command name", path)
	}
	return strings.Fields(s[i+1:]), nil
}
