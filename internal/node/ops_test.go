package node

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTerminatesByDefault(t *testing.T) {
	assert.True(t, TerminatesByDefault(syscall.SIGTERM))
	assert.True(t, TerminatesByDefault(syscall.SIGINT))
	assert.False(t, TerminatesByDefault(syscall.SIGCHLD))
	assert.False(t, TerminatesByDefault(syscall.SIGCONT))
}
