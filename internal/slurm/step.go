// Package slurm reads what Slurm itself says about jobs and steps: host
// lists, and a step's owner and nodes as slurmctld knows them (scontrol),
// which, unlike a task's environment, its user cannot forge.
package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Step is a job step as slurmctld knows it (scontrol show step).
type Step struct {
	ID    string   // "JOB.STEP"
	UID   uint32   // the step's owner
	Nodes []string // its nodes, in Slurm's order
	Tasks int      // its number of tasks
}

// showStepTimeout bounds scontrol: slurmctld answers in milliseconds, and a
// step's start waits for it.
const showStepTimeout = 15 * time.Second

// ShowStep asks slurmctld for step id ("JOB.STEP") with `scontrol show step
// -o`. conf, if set, is the slurm.conf scontrol reads (SLURM_CONF).
func ShowStep(ctx context.Context, conf, id string) (Step, error) {
	ctx, cancel := context.WithTimeout(ctx, showStepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "scontrol", "show", "step", "-o", id)
	cmd.Env = os.Environ()
	if conf != "" {
		cmd.Env = append(cmd.Env, "SLURM_CONF="+conf)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Step{}, fmt.Errorf("scontrol show step %s: %w: %s", id, err, strings.TrimSpace(stderr.String()))
	}
	return ParseStep(string(out), id)
}

// ParseStep reads step id from scontrol's one-line step records (several
// lines when a step's id is ambiguous, one per record).
func ParseStep(out, id string) (Step, error) {
	for _, line := range strings.Split(out, "\n") {
		f := fields(line)
		if f["StepId"] != id {
			continue
		}
		s := Step{ID: id}
		uid, err := parseUID(f["UserId"])
		if err != nil {
			return s, fmt.Errorf("step %s: UserId=%q: %w", id, f["UserId"], err)
		}
		s.UID = uid
		if s.Nodes, err = ExpandHostlist(f["NodeList"]); err != nil {
			return s, fmt.Errorf("step %s: NodeList: %w", id, err)
		}
		if s.Tasks, err = strconv.Atoi(f["Tasks"]); err != nil || s.Tasks < 1 {
			return s, fmt.Errorf("step %s: Tasks=%q is not a task count", id, f["Tasks"])
		}
		return s, nil
	}
	if strings.TrimSpace(out) == "" {
		return Step{}, fmt.Errorf("slurmctld knows no step %s", id)
	}
	return Step{}, fmt.Errorf("scontrol printed no record of step %s: %.200q", id, out)
}

// fields splits a one-line record of KEY=VALUE words.
func fields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			if _, dup := m[k]; !dup {
				m[k] = v
			}
		}
	}
	return m
}

// parseUID reads "1001" or "name(1001)".
func parseUID(v string) (uint32, error) {
	if i := strings.LastIndexByte(v, '('); i >= 0 && strings.HasSuffix(v, ")") {
		v = v[i+1 : len(v)-1]
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, errors.New("not a uid")
	}
	return uint32(n), nil
}
