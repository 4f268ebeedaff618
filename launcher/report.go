package launcher

// cruz report JOB: what protecting a job costs, from what the agent already
// keeps (the job's checkpoints with their phases and sizes, and its event
// log): a table on stdout and a PNG of held time and size over time.
//
// The plot is drawn with gonum.org/v1/plot: pure Go (no cgo, no gnuplot to
// install on the nodes), maintained with gonum, and it renders PNG through
// its vgimg canvas onto an image of the exact pixel size asked for.

import (
	"fmt"
	"image"
	"image/color"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// reportRow is one line of the report: a checkpoint, or an event that
// bears on the job's protection (a failed checkpoint, a stretched
// interval, a failure, a recovery, a pruning).
type reportRow struct {
	Time  time.Time
	What  string // checkpoint, or the event's kind
	Ckpt  *api.Checkpoint
	Note  string
	Error bool // a failed checkpoint or a failure of the job
}

// report is what cruz report shows.
type report struct {
	Job      api.Job
	Rows     []reportRow
	Count    int           // checkpoints listed
	Failed   int           // checkpoints that failed
	Held     time.Duration // mean time the job was held, of the checkpoints that resumed it
	MaxHeld  time.Duration
	Bytes    int64 // mean size
	Stretch  int   // interval changes made by policy.max_overhead
	Failures int   // failures of the job detected
}

// reportKinds are the events a report shows besides the checkpoints.
var reportKinds = map[api.EventKind]bool{
	api.EventStarted: true, api.EventCheckpointFailed: true, api.EventStretched: true, api.EventPruned: true,
	api.EventFailure: true, api.EventRecovered: true, api.EventMigrated: true, api.EventRestarted: true,
}

func buildReport(j api.Job, cks []api.Checkpoint, evs []api.Event) report {
	r := report{Job: j}
	var heldSum time.Duration
	var heldN int
	var bytesSum int64
	for i := range cks {
		ck := &cks[i]
		r.Rows = append(r.Rows, reportRow{Time: ck.Created, What: "checkpoint", Ckpt: ck})
		r.Count++
		bytesSum += ck.Bytes
		if h, ok := ck.Phases["held"]; ok && !ck.Stopped {
			d := time.Duration(h) * time.Millisecond
			heldSum += d
			heldN++
			r.MaxHeld = max(r.MaxHeld, d)
		}
	}
	for _, e := range evs {
		if !reportKinds[e.Kind] {
			continue
		}
		row := reportRow{Time: e.Time, What: string(e.Kind), Note: e.Message}
		switch e.Kind {
		case api.EventCheckpointFailed:
			r.Failed++
			row.Error = true
		case api.EventFailure:
			r.Failures++
			row.Error = true
		case api.EventStretched:
			r.Stretch++
		}
		r.Rows = append(r.Rows, row)
	}
	sort.SliceStable(r.Rows, func(a, b int) bool { return r.Rows[a].Time.Before(r.Rows[b].Time) })
	if heldN > 0 {
		r.Held = heldSum / time.Duration(heldN)
	}
	if r.Count > 0 {
		r.Bytes = bytesSum / int64(r.Count)
	}
	return r
}

func ms(phases map[string]int64, k string) string {
	v, ok := phases[k]
	if !ok {
		return "-"
	}
	return strconv.FormatInt(v, 10) + "ms"
}

// printReport writes the report's table; times in loc.
func printReport(w io.Writer, r report, loc *time.Location) {
	name := r.Job.ID
	if r.Job.Name != "" && r.Job.Name != r.Job.ID {
		name += " (" + r.Job.Name + ")"
	}
	fmt.Fprintf(w, "job %s, %s; policy: %s\n", name, r.Job.State, dash(r.Job.Policy))
	fmt.Fprintf(w, "%d checkpoints: held the job %s on average (at most %s), %s each on average; %d failed; interval stretched %d times; %d failures of the job\n\n",
		r.Count, r.Held, r.MaxHeld, humanBytes(r.Bytes), r.Failed, r.Stretch, r.Failures)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tWHAT\tCHECKPOINT\tHELD\tBLOCK\tDUMP\tRESUME\tCOMMIT\tSIZE\tNOTE")
	for _, row := range r.Rows {
		t := row.Time.In(loc).Format(time.DateTime)
		if ck := row.Ckpt; ck != nil {
			note := ""
			if ck.Stopped {
				note = "stopped the job"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t, row.What, ck.ID, ms(ck.Phases, "held"), ms(ck.Phases, "block"),
				ms(ck.Phases, "dump"), ms(ck.Phases, "resume"), ms(ck.Phases, "commit"), humanBytes(ck.Bytes), note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t-\t\t\t\t\t\t\t%s\n", t, row.What, firstLine(row.Note))
	}
	tw.Flush()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// plotReport draws the held time and the size of the checkpoints over
// time, one above the other, failed checkpoints and failures marked on the
// held time's axis, as a PNG of width x height pixels.
func plotReport(w io.Writer, r report, width, height int) error {
	held, size, failed := plotter.XYs{}, plotter.XYs{}, plotter.XYs{}
	for _, row := range r.Rows {
		x := float64(row.Time.Unix()) + float64(row.Time.Nanosecond())/1e9
		if ck := row.Ckpt; ck != nil {
			if h, ok := ck.Phases["held"]; ok && !ck.Stopped {
				held = append(held, plotter.XY{X: x, Y: float64(h)})
			}
			size = append(size, plotter.XY{X: x, Y: float64(ck.Bytes) / (1 << 20)})
		} else if row.Error {
			failed = append(failed, plotter.XY{X: x, Y: 0})
		}
	}
	top := plot.New()
	top.Title.Text = "cruz report " + r.Job.ID + ": what checkpoints cost"
	top.Y.Label.Text = "job held (ms)"
	local := func(t float64) time.Time { return time.Unix(0, int64(t*1e9)).Local() }
	top.X.Tick.Marker = plot.TimeTicks{Format: "15:04:05", Time: local}
	bottom := plot.New()
	bottom.Y.Label.Text = "checkpoint size (MiB)"
	bottom.X.Label.Text = "time"
	bottom.X.Tick.Marker = plot.TimeTicks{Format: "15:04:05", Time: local}
	if err := addSeries(top, held, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, "held"); err != nil {
		return err
	}
	if len(failed) > 0 {
		s, err := plotter.NewScatter(failed)
		if err != nil {
			return err
		}
		s.GlyphStyle.Shape = draw.TriangleGlyph{}
		s.GlyphStyle.Radius = vg.Points(5)
		s.GlyphStyle.Color = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
		top.Add(s)
		top.Legend.Add("failed", s)
	}
	if err := addSeries(bottom, size, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, "size"); err != nil {
		return err
	}
	top.Legend.Top = true
	bottom.Legend.Top = true
	for _, p := range []*plot.Plot{top, bottom} {
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
	}
	// The same time axis on both.
	lo, hi := min(top.X.Min, bottom.X.Min), max(top.X.Max, bottom.X.Max)
	top.X.Min, top.X.Max, bottom.X.Min, bottom.X.Max = lo, hi, lo, hi

	c := vgimg.NewWith(vgimg.UseImage(image.NewRGBA(image.Rect(0, 0, width, height))))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(12), PadY: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}

func addSeries(p *plot.Plot, xys plotter.XYs, col color.Color, name string) error {
	if len(xys) == 0 {
		return nil
	}
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.Color, pts.Color = col, col
	pts.Shape = draw.CircleGlyph{}
	p.Add(l, pts)
	p.Legend.Add(name, l, pts)
	return nil
}

// parseSize reads WIDTHxHEIGHT in pixels.
func parseSize(s string) (int, int, error) {
	ws, hs, ok := strings.Cut(s, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil || w < 200 || h < 200 || w > 8000 || h > 8000 {
		return 0, 0, fmt.Errorf("--size %q is not WIDTHxHEIGHT in pixels, each from 200 to 8000 (e.g. --size 1200x800)", s)
	}
	return w, h, nil
}

func (c *cli) reportCommand() *cobra.Command {
	var pngPath, size string
	cmd := command("report [--png FILE] [--size WxH] JOB", "a job's checkpoint cost over time: a table and a PNG",
		`Print a table of a job's checkpoints (when, how long each held the job and
each phase took, their sizes) among the events that bear on its protection
(the policy it started with, failed checkpoints, intervals stretched by
policy.max_overhead, failures, recoveries, pruning), and write a PNG of the
held time and size over time, failures marked (default: JOB-report.png in
the working directory; --png - for none).`, [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			w, h, err := parseSize(size)
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			j, err := ag.Job(c.ctx, a[0])
			if err != nil {
				return err
			}
			l, err := ag.Checkpoints(c.ctx, j.ID)
			if err != nil {
				return err
			}
			var evs api.EventList
			if err := ag.Call(c.ctx, "GET", "/v1/jobs/"+url.PathEscape(j.ID)+"/events", nil, &evs); err != nil {
				return err
			}
			r := buildReport(j, l.Checkpoints, evs.Events)
			printReport(c.stdout, r, time.Local)
			for _, p := range l.Problems {
				fmt.Fprintf(c.stderr, "cruz: skipped: %s\n", p)
			}
			if pngPath == "-" {
				return nil
			}
			if pngPath == "" {
				pngPath = j.ID + "-report.png"
			}
			return writePNG(pngPath, func(f io.Writer) error { return plotReport(f, r, w, h) }, c.stdout)
		})
	cmd.Flags().StringVar(&pngPath, "png", "", "where to write the PNG (default: JOB-report.png; - for none)")
	cmd.Flags().StringVar(&size, "size", "1000x700", "the PNG's size in pixels, WIDTHxHEIGHT")
	return cmd
}

// writePNG writes the file whole or not at all: to a temporary file beside
// it, renamed over it once written.
func writePNG(path string, draw func(io.Writer) error, out io.Writer) error {
	f, err := os.CreateTemp(dirOf(path), ".cruz-report-*.png")
	if err != nil {
		return fmt.Errorf("write the report's PNG %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := draw(f); err != nil {
		f.Close()
		return fmt.Errorf("draw the report's PNG: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the report's PNG %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write the report's PNG %s: %w", path, err)
	}
	fmt.Fprintf(out, "\nwrote %s\n", path)
	return nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		if i == 0 {
			return "/"
		}
		return path[:i]
	}
	return "."
}
