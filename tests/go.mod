module github.com/batonhq/baton/tests

go 1.26

replace (
	github.com/batonhq/baton/proto => ../proto
	github.com/batonhq/baton/worker => ../worker
	github.com/batonhq/baton/broker => ../broker
)
