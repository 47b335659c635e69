#!/usr/bin/env python3
"""Check that proto/*.proto is wire-compatible with Triton's gRPC protocol.

Compares our descriptors against those bundled in tritonclient.grpc
(service_pb2, model_config_pb2): for every message/enum present in both,
field names, numbers, types, labels, type names and oneof membership must
match, and every Triton RPC must exist with the same signature.
Fields Triton has and we omit are listed, not failed (absent == unset).

Needs: pip install 'tritonclient[grpc]' grpcio-tools   (in a throwaway venv)
Usage: python scripts/check_proto_compat.py [--strict]   (--strict: omissions fail too)
"""
import os
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc
from tritonclient.grpc import model_config_pb2 as t_mc
from tritonclient.grpc import service_pb2 as t_svc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(ROOT, "proto")


def load_ours():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fds.pb")
        inc = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        rc = protoc.main(["protoc", f"-I{PROTO}", f"-I{inc}", "--include_imports",
                          f"--descriptor_set_out={out}", "inference.proto", "model_config.proto"])
        if rc != 0:
            sys.exit(f"protoc failed ({rc})")
        fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return pool


def fsig(f):
    tn = f.message_type.full_name if f.message_type else f.enum_type.full_name if f.enum_type else ""
    oneof = f.containing_oneof.name if f.containing_oneof else ""
    return (f.number, f.type, f.label, tn, oneof)


stats = {"messages": 0, "fields": 0, "enums": 0, "enum_values": 0, "rpcs": 0}
errors, omitted = [], []


def cmp_enum(te, oe):
    stats["enums"] += 1
    ov = {v.name: v.number for v in oe.values}
    for v in te.values:
        if v.name not in ov:
            omitted.append(f"enum value {te.full_name}.{v.name}")
        elif ov[v.name] != v.number:
            errors.append(f"{te.full_name}.{v.name}: {ov[v.name]} != {v.number}")
        else:
            stats["enum_values"] += 1
    for name in set(ov) - {v.name for v in te.values}:
        errors.append(f"extra enum value {oe.full_name}.{name}")


def cmp_msg(tm, om):
    stats["messages"] += 1
    tf = {f.name: f for f in tm.fields}
    of = {f.name: f for f in om.fields}
    for name, f in of.items():
        if name not in tf:
            errors.append(f"extra field {om.full_name}.{name}")
        elif fsig(f) != fsig(tf[name]):
            errors.append(f"{om.full_name}.{name}: ours {fsig(f)} != triton {fsig(tf[name])}")
        else:
            stats["fields"] += 1
    for name in tf:
        if name not in of:
            omitted.append(f"field {tm.full_name}.{name} = {tf[name].number}")
    if tm.GetOptions().map_entry != om.GetOptions().map_entry:
        errors.append(f"{om.full_name}: map_entry differs")
    for n in tm.nested_types:
        if n.name in om.nested_types_by_name:
            cmp_msg(n, om.nested_types_by_name[n.name])
        elif not n.GetOptions().map_entry:
            omitted.append(f"message {n.full_name}")
    for e in tm.enum_types:
        if e.name in om.enum_types_by_name:
            cmp_enum(e, om.enum_types_by_name[e.name])
        else:
            omitted.append(f"enum {e.full_name}")


def main():
    pool = load_ours()
    for tfile in (t_svc.DESCRIPTOR, t_mc.DESCRIPTOR):
        ofile = pool.FindFileByName("inference.proto" if tfile.name == "grpc_service.proto" else tfile.name)
        if ofile.package != tfile.package:
            errors.append(f"package {ofile.package} != {tfile.package}")
        for name, tm in tfile.message_types_by_name.items():
            if name in ofile.message_types_by_name:
                cmp_msg(tm, ofile.message_types_by_name[name])
            else:
                omitted.append(f"message {tm.full_name}")
        for name, te in tfile.enum_types_by_name.items():
            if name in ofile.enum_types_by_name:
                cmp_enum(te, ofile.enum_types_by_name[name])
            else:
                omitted.append(f"enum {te.full_name}")
        for name, ts in tfile.services_by_name.items():
            os_ = ofile.services_by_name.get(name)
            if os_ is None:
                errors.append(f"missing service {ts.full_name}")
                continue
            om = {m.name: m for m in os_.methods}
            for m in ts.methods:
                o = om.get(m.name)
                tp, op = descriptor_pb2.MethodDescriptorProto(), descriptor_pb2.MethodDescriptorProto()
                m.CopyToProto(tp)
                if o is None:
                    errors.append(f"missing rpc {m.name}")
                    continue
                o.CopyToProto(op)
                if (op.input_type, op.output_type, op.client_streaming, op.server_streaming) != (
                        tp.input_type, tp.output_type, tp.client_streaming, tp.server_streaming):
                    errors.append(f"rpc {m.name} signature differs")
                else:
                    stats["rpcs"] += 1
            for extra in set(om) - {m.name for m in ts.methods}:
                errors.append(f"extra rpc {extra}")

    print("matched:", ", ".join(f"{v} {k}" for k, v in stats.items()))
    print(f"omitted (Triton has, we don't): {len(omitted)}")
    for o in omitted:
        print("  -", o)
    print(f"mismatches: {len(errors)}")
    for e in errors:
        print("  !", e)
    strict = "--strict" in sys.argv
    return 1 if errors or (strict and omitted) else 0


if __name__ == "__main__":
    sys.exit(main())
