package jinja

type testFunc func(ev *evaluator, v any, a *args) (bool, error)

// lookupTest returns the test called name ("x is name"), or nil.
func lookupTest(name string) testFunc {
	switch name {
	case "defined":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, u := v.(undefined); return !u, nil }
	case "undefined":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, u := v.(undefined); return u, nil }
	case "none":
		return func(_ *evaluator, v any, _ *args) (bool, error) { return v == nil, nil }
	case "boolean":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, ok := v.(bool); return ok, nil }
	case "true":
		return func(_ *evaluator, v any, _ *args) (bool, error) { return v == true, nil }
	case "false":
		return func(_ *evaluator, v any, _ *args) (bool, error) { return v == false, nil }
	case "integer":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, ok := v.(int64); return ok, nil }
	case "float":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, ok := v.(float64); return ok, nil }
	case "number":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, _, _, ok := toNumber(v); return ok, nil }
	case "string":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, ok := v.(string); return ok, nil }
	case "mapping":
		return func(_ *evaluator, v any, _ *args) (bool, error) { _, ok := v.(*dict); return ok, nil }
	case "iterable":
		return func(_ *evaluator, v any, _ *args) (bool, error) {
			switch v.(type) {
			case string, *list, *dict, undefined:
				return true, nil
			}
			return false, nil
		}
	case "sequence":
		return func(_ *evaluator, v any, _ *args) (bool, error) {
			switch v.(type) {
			case string, *list, *dict, undefined:
				return true, nil
			}
			return false, nil
		}
	case "callable":
		return func(_ *evaluator, v any, _ *args) (bool, error) {
			switch v.(type) {
			case *macro, builtinFunc, *method:
				return true, nil
			}
			return false, nil
		}
	case "escaped":
		return func(_ *evaluator, _ any, _ *args) (bool, error) { return false, nil }
	case "lower", "upper":
		lower := name == "lower"
		return func(ev *evaluator, v any, _ *args) (bool, error) {
			s, err := ev.toStr(v)
			if err != nil {
				return false, err
			}
			if err := ev.work(len(s)); err != nil {
				return false, err
			}
			return isCase(s, lower), nil
		}
	case "even", "odd":
		want := int64(0)
		if name == "odd" {
			want = 1
		}
		return func(ev *evaluator, v any, _ *args) (bool, error) {
			m, err := ev.binary("%", v, int64(2))
			if err != nil {
				return false, err
			}
			return ev.equal(m, want, 0)
		}
	case "divisibleby":
		return func(ev *evaluator, v any, a *args) (bool, error) {
			p, err := a.bind(ev, "divisibleby", "num")
			if err != nil {
				return false, err
			}
			if !has(p[0]) {
				return false, ev.errf("divisibleby needs a number")
			}
			m, err := ev.binary("%", v, p[0])
			if err != nil {
				return false, err
			}
			return ev.equal(m, int64(0), 0)
		}
	case "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in":
		op := map[string]string{"eq": "==", "equalto": "==", "ne": "!=", "lt": "<", "lessthan": "<", "le": "<=",
			"gt": ">", "greaterthan": ">", "ge": ">=", "in": "in"}[name]
		if op == "" {
			op = name
		}
		return func(ev *evaluator, v any, a *args) (bool, error) {
			p, err := a.bind(ev, name, "other")
			if err != nil {
				return false, err
			}
			if !has(p[0]) {
				return false, ev.errf("test '%s' needs an argument", name)
			}
			return ev.compareOp(op, v, p[0])
		}
	case "sameas":
		return func(ev *evaluator, v any, a *args) (bool, error) {
			p, err := a.bind(ev, "sameas", "other")
			if err != nil {
				return false, err
			}
			// Scalars compare by value (Python interns the small ones),
			// containers by identity.
			return v == p[0], nil
		}
	}
	return nil
}
