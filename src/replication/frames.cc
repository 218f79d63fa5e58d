#include "replication/frames.h"

#include <fmt/format.h>

#include "storage/store.h"

namespace edgestate::replication {

StatusOr<DecodedDelta> DecodeDelta(const pb::Delta& d) {
  if (static_cast<size_t>(d.slots_size() + d.records_size()) > kMaxDeltaEntries) {
    return Status::InvalidArgument(fmt::format("delta of {} records exceeds the limit of {}",
                                               d.slots_size() + d.records_size(),
                                               kMaxDeltaEntries));
  }
  DecodedDelta out;
  out.registers.reserve(d.records_size());
  for (const pb::RecordDelta& r : d.records()) {
    if (r.type() > 0xff) return Status::InvalidArgument("record type out of range");
    StatusOr<storage::RecordType> type = storage::ParseRecordType(static_cast<char>(r.type()));
    if (!type.ok()) return type.status();
    StatusOr<storage::StoredRegister> state = storage::DecodeRegister(r.state());
    if (!state.ok()) return state.status();
    out.registers.push_back(
        service::RegisterUpdate{*type, r.name(), std::move(state->reg), r.stream_seq()});
  }
  out.slots.reserve(d.slots_size());
  for (const pb::SlotDelta& s : d.slots()) {
    out.slots.push_back(service::SlotUpdate{
        s.name(), crdt::Slot{s.inc(), s.dec(), s.version(), s.updated_at_ms()}, s.origin()});
  }
  return out;
}

}  // namespace edgestate::replication
