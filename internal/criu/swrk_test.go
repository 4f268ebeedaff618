package criu

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrorContextQuotesLinesAroundErrors(t *testing.T) {
	log := strings.Join([]string{
		"(00.001) start",
		"(00.002) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self",
		"(00.003) a",
		"(00.004) b",
		"(00.005) c",
		"(00.006) Error (criu/files-reg.c:1790): Can't lookup mount=24",
		"(00.007) d",
		"(00.008) e",
		"(00.009) f",
	}, "\n")
	got := errorContext(log, 1, 16)
	assert.Contains(t, got, "Can't lookup mount=24")
	assert.Contains(t, got, "(00.005) c")
	assert.Contains(t, got, "(00.007) d")
	assert.NotContains(t, got, "(00.009) f")
	assert.NotContains(t, got, "RLIMIT_NOFILE", "the harmless rlimit line is not quoted as the cause")
	// Without any error line, the end of the log is quoted.
	assert.Contains(t, errorContext("x\ny\nz", 1, 2), "z")
}

func TestVersionString(t *testing.T) {
	assert.Equal(t, "4.2.1", VersionString(40201))
	assert.Equal(t, "3.17.1", VersionString(31701))
}
