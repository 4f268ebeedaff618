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
