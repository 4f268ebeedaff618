package nl

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
)

// fakeDump answers interrupted times with partial results and
// ErrDumpInterrupted (as vishvananda/netlink does), then the full list.
type fakeDump struct {
	interrupted, calls int
	err                error // returned instead, if set
}

func (f *fakeDump) list() ([]string, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if f.calls <= f.interrupted {
		return []string{"partial"}, fmt.Errorf("wrapped: %w", netlink.ErrDumpInterrupted)
	}
	return []string{"a", "b"}, nil
}

func TestRetry(t *testing.T) {
	for _, tc := range []struct {
		name        string
		interrupted int
		want        []string
		calls       int
	}{
		{"clean dump", 0, []string{"a", "b"}, 1},
		{"one interruption", 1, []string{"a", "b"}, 2},
		{"interrupted all but the last attempt", DumpAttempts - 1, []string{"a", "b"}, DumpAttempts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeDump{interrupted: tc.interrupted}
			got, err := Retry("things", f.list)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.calls, f.calls)
		})
	}
}

// Interrupted every time: bounded, no partial list, an error that says what
// and still matches ErrDumpInterrupted.
func TestRetryGivesUp(t *testing.T) {
	f := &fakeDump{interrupted: 1 << 30}
	got, err := Retry("interfaces", f.list)
	require.Nil(t, got, "a list that may be wrong is not returned")
	require.ErrorIs(t, err, netlink.ErrDumpInterrupted)
	require.EqualError(t, err, fmt.Sprintf("the kernel interrupted the dump of interfaces %d times in a row, as the table kept changing: %s", DumpAttempts, netlink.ErrDumpInterrupted))
	require.Equal(t, DumpAttempts, f.calls)
}

// Other errors are not retried.
func TestRetryOtherError(t *testing.T) {
	f := &fakeDump{err: syscall.EPERM}
	_, err := Retry("routes", f.list)
	require.True(t, errors.Is(err, syscall.EPERM))
	require.Equal(t, 1, f.calls)
}

// The real dumps answer (no retry is needed on a quiet table, but the
// wrappers must pass their arguments through).
func TestRealDumps(t *testing.T) {
	links, err := LinkList()
	require.NoError(t, err)
	var lo netlink.Link
	for _, l := range links {
		if l.Attrs().Name == "lo" {
			lo = l
		}
	}
	require.NotNil(t, lo, "lo is listed")
	addrs, err := AddrList(lo, netlink.FAMILY_V4)
	require.NoError(t, err)
	for _, a := range addrs {
		require.Equal(t, lo.Attrs().Index, a.LinkIndex)
	}
	_, err = RouteList(nil, netlink.FAMILY_V4)
	require.NoError(t, err)
	_, err = NeighList(0, netlink.FAMILY_V4)
	require.NoError(t, err)
}
