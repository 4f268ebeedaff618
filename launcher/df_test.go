package launcher

import (
	"bytes"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
)

func TestPrintStoreUsage(t *testing.T) {
	var b bytes.Buffer
	printStoreUsage(&b, api.StoreUsage{Dir: "/s", Free: 3 << 30, Used: 30 << 20, Users: []api.UserUsage{
		{User: "alice", UID: 1001, Bytes: 10 << 20, Quota: 40 << 20, Jobs: []api.JobUsage{{Job: "a-1", Bytes: 10 << 20, Checkpoints: 2}}},
		{User: "bob", UID: 1002, Bytes: 20 << 20, Jobs: []api.JobUsage{{Job: "b-1", Bytes: 8 << 20, Checkpoints: 1}, {Job: "b-2", Bytes: 12 << 20, Checkpoints: 3}}},
	}})
	assert.Equal(t, `store /s: 3.0GiB free, 30.0MiB used
USER   JOB    CHECKPOINTS  USED     QUOTA    USE%
alice  (all)  2            10.0MiB  40.0MiB  25%
alice  a-1    2            10.0MiB           
bob    (all)  4            20.0MiB  none     -
bob    b-1    1            8.0MiB            
bob    b-2    3            12.0MiB           
`, b.String())
}
