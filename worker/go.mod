module github.com/batonhq/baton/worker

go 1.26

replace github.com/batonhq/baton/proto => ../proto
