variable "name" {
  type = string
}

variable "replicas" {
  type = number
}

variable "network" {
  type = string
}

variable "policy_json" {
  type = string
}

resource "terraform_data" "service" {
  input = {
    name     = var.name
    replicas = var.replicas
    network  = var.network
    policy   = sha256(var.policy_json)
  }
}

output "id" {
  value = terraform_data.service.id
}
