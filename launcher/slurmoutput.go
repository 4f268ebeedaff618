package launcher

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// stdOutField is the job's output file in `scontrol show job -o`.
var stdOutField = regexp.MustCompile(`(?:^| )StdOut=(\S+)`)

// stdoutFileBytes is the size, now, of the output file of Slurm job jobID
// (scontrol's StdOut), or nil if it cannot be told (no such file, not a
// regular file, a name with an unexpanded pattern, no scontrol).
//
// A requeued job's step resumes, and its agent replays the step's earlier
// output ahead of the restored run's, because Slurm truncates the file at
// the requeue; with --open-mode=append (or JobFileAppend=1) it does not, the
// file still holds that output, and the replay would double it. Slurm does
// not tell the job which mode it has, so the size of the file when the step
// starts, against the bytes the replay would write, tells it (agent
// resumeSlurm). It runs as the task, that is as the job's owner, whose file
// it is.
func stdoutFileBytes(ctx context.Context, jobID uint32) *int64 {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "scontrol", "show", "job", "-o", strconv.FormatUint(uint64(jobID), 10)).Output()
	if err != nil {
		return nil
	}
	return fileBytes(parseStdOut(string(out)))
}

// parseStdOut returns the StdOut path in scontrol's one-line job record, ""
// if there is none or it still holds a pattern (%j...).
func parseStdOut(record string) string {
	m := stdOutField.FindStringSubmatch(record)
	if m == nil || strings.Contains(m[1], "%") || !strings.HasPrefix(m[1], "/") {
		return ""
	}
	return m[1]
}

func fileBytes(path string) *int64 {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	n := fi.Size()
	return &n
}
