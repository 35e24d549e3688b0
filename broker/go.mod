module github.com/batonhq/baton/broker

go 1.26

replace github.com/batonhq/baton/proto => ../proto
