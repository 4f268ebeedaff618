package version

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestString(t *testing.T) {
	assert.True(t, strings.HasPrefix(String(), Release+" (commit "), String())
	Commit = "0123abcd"
	defer func() { Commit = "" }()
	assert.Equal(t, Release+" (commit 0123abcd)", String())
}
