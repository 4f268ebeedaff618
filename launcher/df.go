package launcher

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/spf13/cobra"
)

func (c *cli) dfCommand() *cobra.Command {
	var asJSON bool
	cmd := command("df [--json]", "your use of the checkpoint store, by job (root: every user's)",
		`Show how much of the checkpoint store your jobs' checkpoints take, job by
job, against your quota (store.quota, store.user_quotas; a checkpoint that
would pass it fails and the job runs on), and what the store has free.
Root sees every user's.`, [2]int{0, 0},
		func(_ *cobra.Command, _ []string) error {
			ag, err := c.agent()
			if err != nil {
				return err
			}
			var u api.StoreUsage
			if err := ag.Call(c.ctx, "GET", "/v1/store", nil, &u); err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, u)
			}
			printStoreUsage(c.stdout, u)
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printStoreUsage prints one line per user (USED/QUOTA), then one per job.
func printStoreUsage(w io.Writer, u api.StoreUsage) {
	fmt.Fprintf(w, "store %s: %s free", u.Dir, humanBytes(u.Free))
	if u.Used > 0 {
		fmt.Fprintf(w, ", %s used", humanBytes(u.Used))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tJOB\tCHECKPOINTS\tUSED\tQUOTA\tUSE%")
	for _, usr := range u.Users {
		quota, pct := "none", "-"
		if usr.Quota > 0 {
			quota = humanBytes(usr.Quota)
			pct = fmt.Sprintf("%d%%", usr.Bytes*100/usr.Quota)
		}
		n := 0
		for _, j := range usr.Jobs {
			n += j.Checkpoints
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", usr.User, "(all)", n, humanBytes(usr.Bytes), quota, pct)
		for _, j := range usr.Jobs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t\t\n", usr.User, j.Job, j.Checkpoints, humanBytes(j.Bytes))
		}
	}
	tw.Flush()
}
