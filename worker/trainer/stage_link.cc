#include "worker/trainer/stage_link.h"

namespace moerun::trainer {

Status StageLink::Send(int peer, uint32_t tag, const void* data, size_t bytes) {
  MOERUN_RETURN_IF_ERROR(Flush());
  held_ = true;
  peer_ = peer;
  tag_ = tag;
  data_ = data;
  bytes_ = bytes;
  return Status::OK();
}

Status StageLink::Recv(int peer, uint32_t tag, void* data, size_t bytes) {
  if (held_ && peer_ == peer) {
    held_ = false;
    return comm_->SendRecv(peer_, tag_, data_, bytes_, peer, tag, data, bytes);
  }
  MOERUN_RETURN_IF_ERROR(Flush());
  return comm_->Recv(peer, tag, data, bytes);
}

Status StageLink::Flush() {
  if (!held_) return Status::OK();
  held_ = false;
  return comm_->Send(peer_, tag_, data_, bytes_);
}

}  // namespace moerun::trainer
