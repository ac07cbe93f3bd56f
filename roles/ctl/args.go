package ctl

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// leadingArgs caps, per command, the positional arguments that flags may
// follow; the next positional argument and everything after it are taken
// verbatim. So `run demo --image busybox sh -c 'echo hi'` runs `sh -c ...`
// without "--", as `docker run` would, while `--` stays the explicit way.
var leadingArgs = map[string]int{"run": 1, "exec": 1}

// interspersed rewrites args (what follows `fsb ctl`) so that flags may come
// after positional arguments, as people type them: `fsb ctl get demo -o
// json`, `fsb ctl -n team list`, `fsb ctl logs demo -f -n team`. urfave/cli
// v2, like Go's flag package, stops at the first argument that is not a
// flag. The result puts the global flags first, then the command, its flags,
// "--" and its positional arguments. A global flag given after the command
// moves in front of it; a flag neither knows is left to the command, which
// reports it. Anything after "--" is positional. Every known flag is
// spelt by its full name ("-p 80" becomes "--port 80"), since urfave/cli
// refuses two spellings of one flag ("-p 80 --port 81").
func interspersed(app *cli.App, args []string) []string {
	globals := flagSpecs(app.Flags)
	var global []string
	i := 0
	for i < len(args) && isFlag(args[i]) {
		global = append(global, take(globals, args, &i)...)
	}
	if i >= len(args) || args[i] == "--" {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args
	}
	names := []string{args[i]}
	i++
	// A command with subcommands (config set) goes down to the one named.
	for i < len(args) && len(cmd.Subcommands) > 0 {
		sub := cmd.Command(args[i])
		if sub == nil {
			break
		}
		cmd = sub
		names = append(names, args[i])
		i++
	}
	own := flagSpecs(cmd.Flags)
	limit, limited := leadingArgs[cmd.Name]
	var flags, positional []string
	for i < len(args) {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case isFlag(a):
			if _, mine := own[flagName(a)]; !mine {
				if _, isGlobal := globals[flagName(a)]; isGlobal {
					global = append(global, take(globals, args, &i)...)
					continue
				}
			}
			flags = append(flags, take(own, args, &i)...)
		case limited && len(positional) >= limit:
			positional = append(positional, args[i:]...)
			i = len(args)
		default:
			positional = append(positional, a)
			i++
		}
	}
	out := append(global, names...)
	out = append(out, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}

// flagSpec is what interspersed needs to know of a flag.
type flagSpec struct {
	name       string // the first, full name
	takesValue bool
}

// flagSpecs maps every name of flags (and of the help flag) to its spec.
func flagSpecs(flags []cli.Flag) map[string]flagSpec {
	m := map[string]flagSpec{"help": {name: "help"}, "h": {name: "help"}}
	for _, f := range flags {
		spec := flagSpec{name: f.Names()[0], takesValue: true}
		if v, ok := f.(interface{ TakesValue() bool }); ok {
			spec.takesValue = v.TakesValue()
		}
		for _, n := range f.Names() {
			m[n] = spec
		}
	}
	return m
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// flagName returns "image" for "--image", "-image" and "--image=x".
func flagName(a string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	return name
}

// take returns the flag at args[*i], spelt by its full name, with its value
// when that is the next argument, and moves *i past them. An unknown flag is
// returned as it is, alone.
func take(specs map[string]flagSpec, args []string, i *int) []string {
	a := args[*i]
	*i++
	spec, ok := specs[flagName(a)]
	if !ok {
		return []string{a}
	}
	_, value, inline := strings.Cut(a, "=")
	flag := "--" + spec.name
	switch {
	case inline:
		return []string{flag + "=" + value}
	case spec.takesValue && *i < len(args):
		*i++
		return []string{flag, args[*i-1]}
	}
	return []string{flag}
}
