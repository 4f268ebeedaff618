package proc

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// A process outside Slurm (this test, whatever it calls itself) is no
// task of any step.
func TestSlurmStepOfNoStep(t *testing.T) {
	_, err := SlurmStepOf(os.Getpid())
	require.True(t, errors.Is(err, ErrNoSlurmStep), "got %v", err)
}

func TestSlurmstepdNames(t *testing.T) {
	for exe, want := range map[string]bool{
		"/usr/sbin/slurmstepd": true, "/usr/sbin/slurmstepd-wlm": true, "/usr/sbin/slurmstepd-wlm (deleted)": true,
		"/home/u/slurmstepd.sh": false, "/usr/sbin/slurmd": false, "/usr/bin/sleep": false,
	} {
		require.Equal(t, want, isSlurmstepdExe(exe), exe)
	}
	for title, want := range map[string]string{
		"slurmstepd: [1.0]": "1.0", "slurmstepd: [777001.12]   ": "777001.12", "slurmstepd: [5.batch]": "5.batch",
		"slurmstepd: [1.0": "", "slurmstepd": "", "sleep 5": "",
	} {
		got, ok := stepOfTitle(title)
		require.Equal(t, want != "", ok, title)
		require.Equal(t, want, got, title)
	}
}
