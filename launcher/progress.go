package launcher

// Progress of long operations (checkpoint, migrate, drain) on cruz's
// stderr, so that stdout keeps only the result for scripts: a progress bar
// on a terminal, a plain line per step otherwise, JSON lines with --json.
//
// The bar is github.com/schollz/progressbar/v3: maintained, pure Go, no
// cgo, writes to any io.Writer and clears itself when done; mpb (the other
// served choice) is built for many concurrent bars, which cruz never shows.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressView shows an operation's progress; end is called once, before
// the result is printed.
type progressView interface {
	show(p api.Progress)
	end()
}

// progressView picks the view for c.stderr.
func (c *cli) progressView(asJSON bool) progressView {
	return progressViewFor(c.stderr, asJSON)
}

// progressViewFor picks the view for w.
func progressViewFor(w io.Writer, asJSON bool) progressView {
	switch {
	case asJSON:
		return &jsonProgress{w: w}
	case isTerminal(w):
		return &barProgress{w: w}
	}
	return &plainProgress{w: w}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressText says where an operation stands, e.g.
// "checkpoint job-3: dump 1/4 pods, 12.0MiB, 0.8s".
func progressText(p api.Progress) string {
	var b strings.Builder
	b.WriteString(p.Op)
	if p.Job != "" {
		b.WriteString(" " + p.Job)
	}
	if p.Pod != "" {
		b.WriteString(" pod " + p.Pod)
	}
	b.WriteString(": " + p.Phase)
	if p.Phase == "dump" || p.Phase == "restore" {
		fmt.Fprintf(&b, " %d/%d pods", p.PodsDone, p.Pods)
	}
	if p.Bytes > 0 {
		b.WriteString(", " + humanBytes(p.Bytes))
	}
	fmt.Fprintf(&b, ", %.1fs", float64(p.ElapsedMS)/1000)
	return b.String()
}

// plainProgress prints a line when the phase or the pods done change, and
// the bytes written at most once a second.
type plainProgress struct {
	w        io.Writer
	last     api.Progress
	lastTime time.Time
	now      func() time.Time // for tests
}

func (v *plainProgress) show(p api.Progress) {
	now := time.Now
	if v.now != nil {
		now = v.now
	}
	changed := p.Phase != v.last.Phase || p.PodsDone != v.last.PodsDone || p.Pod != v.last.Pod
	if !changed && (p.Bytes == v.last.Bytes || now().Sub(v.lastTime) < time.Second) {
		return
	}
	v.last, v.lastTime = p, now()
	fmt.Fprintln(v.w, progressText(p))
}

func (v *plainProgress) end() {}

// jsonProgress prints every progress frame as a line {"progress": ...}.
type jsonProgress struct{ w io.Writer }

func (v *jsonProgress) show(p api.Progress) {
	b, err := json.Marshal(api.Frame{Progress: &p})
	if err == nil {
		fmt.Fprintf(v.w, "%s\n", b)
	}
}

func (v *jsonProgress) end() {}

// barProgress is a bar of the pods done, described by progressText.
type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (v *barProgress) show(p api.Progress) {
	if v.bar == nil {
		v.bar = progressbar.NewOptions(max(p.Pods, 1), progressbar.OptionSetWriter(v.w),
			progressbar.OptionSetWidth(20), progressbar.OptionClearOnFinish(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowCount())
	}
	v.bar.Describe(progressText(p))
	_ = v.bar.Set(p.PodsDone)
}

func (v *barProgress) end() {
	if v.bar != nil {
		_ = v.bar.Finish()
	}
}
